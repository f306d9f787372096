"""RoIAlign: fused and composite against a NumPy reference written from the math, gradients, errors."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import loader, roi_align

IMPLS = ["fused", "composite"]


def reference_roi_align(features, boxes, box_indices, out_h, out_w, scale, sampling_ratio, aligned):
    """Direct transcription of RoIAlign's definition (torchvision), one sample at a time."""
    _, height, width, channels = features.shape
    out = np.zeros((len(boxes), out_h, out_w, channels), np.float64)

    def sample(img, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return np.zeros(channels)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(math.floor(y)), int(math.floor(x))
        if y0 >= height - 1:
            y0 = y1 = height - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= width - 1:
            x0 = x1 = width - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
                + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])

    offset = 0.5 if aligned else 0.0
    for k, (box, n) in enumerate(zip(boxes, box_indices)):
        x1, y1, x2, y2 = (float(v) * scale - offset for v in box)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / out_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / out_w))
        count = max(grid_h * grid_w, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = np.zeros(channels)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += sample(features[n], y, x)
                out[k, ph, pw] = acc / count
    return out


def random_case(seed, batch=2, height=13, width=17, channels=3, num_boxes=6, scale=0.5):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, height, width, channels))
    # Boxes in input pixels: some inside, some partly and fully outside, one degenerate.
    img_h, img_w = height / scale, width / scale
    x1 = rng.uniform(-0.3 * img_w, img_w, num_boxes)
    y1 = rng.uniform(-0.3 * img_h, img_h, num_boxes)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0, img_w, num_boxes), y1 + rng.uniform(0, img_h, num_boxes)], -1)
    boxes[0] = [3.0, 4.0, 3.0, 9.0]  # zero width
    boxes[1] = [-40.0, -50.0, -20.0, -30.0]  # fully outside
    box_indices = rng.integers(0, batch, num_boxes).astype(np.int32)
    return features, boxes, box_indices


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_reference(impl, aligned, sampling_ratio):
    features, boxes, box_indices = random_case(seed=sampling_ratio + 10 * aligned)
    expected = reference_roi_align(features, boxes, box_indices, 5, 4, 0.5, sampling_ratio, aligned)
    got = roi_align(tf.constant(features, tf.float32), tf.constant(boxes, tf.float32), box_indices, (5, 4),
                    spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned, impl=impl)
    assert got.shape == (len(boxes), 5, 4, 3)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_single_channel_big_box_and_square_map(impl):
    """Adaptive grid of several sizes at once (one box spanning the map needs a 4x4 grid)."""
    features, _, _ = random_case(seed=3, batch=1, height=16, width=16, channels=1)
    boxes = np.array([[0, 0, 32, 32], [2, 2, 6, 7], [1, 1, 17, 9]], np.float64)
    indices = np.zeros(3, np.int32)
    expected = reference_roi_align(features, boxes, indices, 2, 2, 0.5, 0, True)
    got = roi_align(features.astype(np.float32), boxes.astype(np.float32), indices, 2, 0.5, impl=impl)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_fused_double_matches_reference_exactly():
    features, boxes, box_indices = random_case(seed=7)
    expected = reference_roi_align(features, boxes, box_indices, 3, 3, 0.5, 0, True)
    got = roi_align(features, boxes, box_indices, 3, 0.5, impl="fused")
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_boxes(impl):
    features = tf.random.normal([2, 8, 8, 5])
    out = roi_align(features, tf.zeros([0, 4]), tf.zeros([0], tf.int32), 7, impl=impl)
    assert out.shape == (0, 7, 7, 5)
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = tf.reduce_sum(roi_align(features, tf.zeros([0, 4]), tf.zeros([0], tf.int32), 7, impl=impl))
    grad = tape.gradient(loss, features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    np.testing.assert_array_equal(grad, np.zeros([2, 8, 8, 5]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(impl, dtype):
    features, boxes, box_indices = random_case(seed=5)
    expected = reference_roi_align(features, boxes, box_indices, 3, 3, 0.5, 0, True)
    got = roi_align(tf.cast(features, dtype), tf.cast(boxes, dtype), box_indices, 3, 0.5, impl=impl)
    assert got.dtype == dtype
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), expected, atol=0.1)


def test_fused_gradient_matches_numerical():
    features, boxes, box_indices = random_case(seed=11, height=6, width=7, channels=2, num_boxes=4)
    boxes = tf.constant(boxes)

    def f(x):
        return roi_align(x, boxes, box_indices, (3, 2), 0.5, sampling_ratio=0, impl="fused")

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(features)])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 3])
def test_fused_and_composite_gradients_agree(aligned, sampling_ratio):
    features, boxes, box_indices = random_case(seed=13, channels=4)
    features = tf.constant(features, tf.float32)
    upstream = tf.random.stateless_normal([len(boxes), 4, 3, 4], seed=[1, 2])
    grads = {}
    for impl in IMPLS:
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = roi_align(features, boxes.astype(np.float32), box_indices, (4, 3), 0.5, sampling_ratio, aligned,
                            impl=impl)
            loss = tf.reduce_sum(out * upstream)
        grads[impl] = tape.gradient(loss, features).numpy()
    assert np.abs(grads["fused"]).max() > 0
    np.testing.assert_allclose(grads["fused"], grads["composite"], atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_works_inside_tf_function_with_unknown_shapes(impl):
    features, boxes, box_indices = random_case(seed=17)
    fn = tf.function(lambda f, b, i: roi_align(f, b, i, 2, 0.5, impl=impl),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)])
    got = fn(features.astype(np.float32), boxes.astype(np.float32), box_indices)
    np.testing.assert_allclose(got.numpy(), reference_roi_align(features, boxes, box_indices, 2, 2, 0.5, 0, True),
                               atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_box_index_out_of_range_is_an_error(impl):
    with pytest.raises(tf.errors.InvalidArgumentError, match="box_indices"):
        roi_align(tf.zeros([2, 4, 4, 1]), tf.constant([[0.0, 0, 2, 2]]), tf.constant([2]), 2, impl=impl)
    with pytest.raises(tf.errors.InvalidArgumentError, match="box_indices"):
        roi_align(tf.zeros([2, 4, 4, 1]), tf.constant([[0.0, 0, 2, 2]]), tf.constant([-1]), 2, impl=impl)


def test_fused_kernel_itself_rejects_bad_inputs():
    """The C++ kernel validates on its own (called without the Python checks)."""
    op = loader.ops_module().tfdet_roi_align
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"box_indices\[0\] = 3 is out of range"):
        op(tf.zeros([2, 4, 4, 1]), tf.constant([[0.0, 0, 2, 2]]), tf.constant([3]), pooled_height=2, pooled_width=2)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="4"):
        op(tf.zeros([2, 4, 4, 1]), tf.constant([[0.0, 0, 2]]), tf.constant([0]), pooled_height=2, pooled_width=2)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        op(tf.zeros([4, 4, 1]), tf.constant([[0.0, 0, 2, 2]]), tf.constant([0]), pooled_height=2, pooled_width=2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("features_shape, boxes_shape, indices_shape, message", [
    ([4, 4, 1], [1, 4], [1], "features must have rank 4"),
    ([1, 4, 4, 1], [4], [1], "boxes must have rank 2"),
    ([1, 4, 4, 1], [1, 5], [1], r"boxes must be \[K, 4\]"),
    ([1, 4, 4, 1], [2, 4], [3], "differ in K"),
    ([1, 4, 4, 1], [1, 4], [1, 1], "box_indices must have rank 1"),
])
def test_wrong_shapes_are_clear_errors(impl, features_shape, boxes_shape, indices_shape, message):
    with pytest.raises(ValueError, match=message):
        roi_align(tf.zeros(features_shape), tf.zeros(boxes_shape), tf.zeros(indices_shape, tf.int32), 2, impl=impl)


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_size"):
        roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], 0)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], 2, sampling_ratio=-1)
    with pytest.raises(ValueError, match="impl"):
        roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), [0], 2, impl="cuda")
    with pytest.raises(ValueError, match="floating"):
        roi_align(tf.zeros([1, 4, 4, 1], tf.int32), tf.zeros([1, 4]), [0], 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_sampling_grid_limit_keeps_every_box_up_to_four_times_the_map(impl):
    """The grid limit max(64, ceil(4 * map side / output side)) per bin side changes no result for boxes up
    to 4 times the feature map (here a 1x1 output, where the map term dominates: 160 x 200 samples), and
    rejects the next larger box and sampling_ratio before any work (such grids used to hang)."""
    features = np.random.default_rng(0).normal(size=(1, 40, 50, 1))
    box = np.array([[-74.7, -59.6, 124.9, 99.8]])  # 199.6 x 159.4 pixels: 4 times the map, at the limit
    got = roi_align(tf.constant(features), box, [0], 1, impl=impl)
    np.testing.assert_allclose(got, reference_roi_align(features, box, [0], 1, 1, 1.0, 0, True), atol=1e-7)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"box 0 has an adaptive sampling grid .* of 160 x 201 "
                                                             r"samples per bin, beyond the limit of 160 x 200"):
        roi_align(tf.constant(features), box + [0, 0, 0.6, 0], [0], 1, impl=impl)
    assert roi_align(tf.constant(features), box, [0], 1, sampling_ratio=160, impl=impl).shape == (1, 1, 1, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampling_ratio = 161 exceeds the limit of 160 x 200"):
        roi_align(tf.constant(features), box, [0], 1, sampling_ratio=161, impl=impl)
    small = tf.zeros([1, 4, 4, 1])
    assert roi_align(small, box, [0], 7, sampling_ratio=64, impl=impl).shape == (1, 7, 7, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampling_ratio = 65 exceeds the limit of 64 x 64"):
        roi_align(small, box, [0], 7, sampling_ratio=65, impl=impl)
