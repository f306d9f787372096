"""deform_roi_pool against a NumPy reference written from the math (mmcv DeformRoIPool), RoIAlign,
numerical gradients, and fused vs composite."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.deform_roi_pool import deform_roi_pool
from tfdet.ops.roi_align import roi_align

IMPLS = ("fused", "composite")


def bilinear_clamped(image, y, x):
    """RoIAlign sampling: nothing beyond one pixel outside; clamped to the border inside that."""
    h, w, _ = image.shape
    if y < -1 or y > h or x < -1 or x > w:
        return np.zeros(image.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1] + ly * (1 - lx) * image[y1, x0]
            + ly * lx * image[y1, x1])


def reference(features, boxes, box_indices, offsets, output_size, spatial_scale, sampling_ratio, gamma):
    out_h, out_w = output_size
    out = np.zeros((len(boxes), out_h, out_w, features.shape[-1]))
    for k, (box, n) in enumerate(zip(boxes, box_indices)):
        x1, y1, x2, y2 = [v * spatial_scale - 0.5 for v in box]
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / out_w, roi_h / out_h
        grid_h = sampling_ratio or math.ceil(roi_h / out_h)
        grid_w = sampling_ratio or math.ceil(roi_w / out_w)
        for ph in range(out_h):
            for pw in range(out_w):
                start_y, start_x = y1, x1
                if offsets is not None:
                    start_x += gamma * roi_w * offsets[k, ph, pw, 0]
                    start_y += gamma * roi_h * offsets[k, ph, pw, 1]
                acc = 0.0
                for iy in range(max(grid_h, 0)):
                    y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(max(grid_w, 0)):
                        x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc = acc + bilinear_clamped(features[n], y, x)
                out[k, ph, pw] = acc / max(grid_h * grid_w, 1)
    return out


def make_case(seed, num_boxes=5, feature_shape=(2, 9, 11, 3), output_size=(3, 2), scale=0.5, with_offsets=True):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=feature_shape)
    h, w = feature_shape[1] / scale, feature_shape[2] / scale
    x1, y1 = rng.uniform(-4, w - 4, num_boxes), rng.uniform(-4, h - 4, num_boxes)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 1.5, num_boxes), y1 + rng.uniform(1, h / 1.5, num_boxes)], -1)
    box_indices = rng.integers(0, feature_shape[0], num_boxes).astype(np.int32)
    offsets = rng.normal(size=(num_boxes, *output_size, 2)) if with_offsets else None
    return features, boxes, box_indices, offsets


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("with_offsets", [True, False])
def test_matches_reference(impl, sampling_ratio, with_offsets):
    features, boxes, box_indices, offsets = make_case(sampling_ratio + 10 * with_offsets, with_offsets=with_offsets)
    offsets = None if offsets is None else 3.0 * offsets  # moves many bins partly off the map
    got = deform_roi_pool(features, boxes, box_indices, offsets, (3, 2), spatial_scale=0.5,
                          sampling_ratio=sampling_ratio, gamma=0.25, impl=impl)  # attrs are float32: exact values
    want = reference(features, boxes, box_indices, offsets, (3, 2), 0.5, sampling_ratio, 0.25)
    tol = 1e-10 if impl == "fused" else 1e-5  # the composite's crop boxes are float32
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", IMPLS)
def test_without_offsets_is_aligned_roi_align(impl):
    features, boxes, box_indices, _ = make_case(3, with_offsets=False)
    features = features.astype(np.float32)
    got = deform_roi_pool(features, boxes, box_indices, None, 4, spatial_scale=0.5, impl=impl)
    want = roi_align(features, boxes, box_indices, 4, spatial_scale=0.5, aligned=True, impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_boxes(impl):
    features = np.ones((1, 4, 4, 2), np.float32)
    out = deform_roi_pool(features, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32),
                          np.zeros((0, 2, 2, 2), np.float32), 2, impl=impl)
    assert out.shape == (0, 2, 2, 2)


def test_gradients_match_numerical_fused():
    features, boxes, box_indices, offsets = make_case(4, num_boxes=3, feature_shape=(2, 6, 7, 2))

    def f(features, offsets):
        return deform_roi_pool(features, boxes, box_indices, offsets, (3, 2), spatial_scale=0.5, gamma=0.375,
                               impl="fused")

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(features), tf.constant(offsets)], delta=1e-6)
    for name, t, n in zip(("features", "offsets"), theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6, err_msg=f"gradient w.r.t. {name}")


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_fused_gradients_match_composite(sampling_ratio):
    features, boxes, box_indices, offsets = make_case(5, num_boxes=4)
    features, offsets = tf.constant(features, tf.float32), tf.constant(offsets, tf.float32)
    weights = tf.constant(np.random.default_rng(6).normal(size=(4, 3, 2, 3)), tf.float32)
    grads = {}
    for impl in IMPLS:
        with tf.GradientTape() as tape:
            tape.watch([features, offsets])
            out = deform_roi_pool(features, boxes, box_indices, offsets, (3, 2), spatial_scale=0.5,
                                  sampling_ratio=sampling_ratio, impl=impl)
            loss = tf.reduce_sum(out * weights)
        grads[impl] = tape.gradient(loss, [features, offsets])
    for name, fused, composite in zip(("features", "offsets"), grads["fused"], grads["composite"]):
        np.testing.assert_allclose(fused, composite, rtol=2e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_inputs(impl):
    features, boxes, box_indices, offsets = make_case(7)
    with pytest.raises(ValueError, match="offsets must be"):
        deform_roi_pool(features, boxes, box_indices, offsets[:, :2], (3, 2), impl=impl)
    with pytest.raises(ValueError, match="boxes must"):
        deform_roi_pool(features, boxes[:, :3], box_indices, offsets, (3, 2), impl=impl)
    with pytest.raises(ValueError, match="features must have rank 4"):
        deform_roi_pool(features[0], boxes, box_indices, offsets, (3, 2), impl=impl)
    with pytest.raises(tf.errors.InvalidArgumentError, match="box_indices"):
        deform_roi_pool(features, boxes, box_indices + 5, offsets, (3, 2), impl=impl)
    with pytest.raises(ValueError, match="deform_roi_pool: boxes .* and box_indices .* differ in K"):
        deform_roi_pool(features, boxes, box_indices[:-1], offsets, (3, 2), impl=impl)
    with pytest.raises(ValueError, match="deform_roi_pool: features must be floating point"):
        deform_roi_pool(tf.cast(features, tf.int32), boxes, box_indices, offsets, (3, 2), impl=impl)
    with pytest.raises(ValueError, match="deform_roi_pool: output_size"):
        deform_roi_pool(features, boxes, box_indices, offsets, (3, 0), impl=impl)


def test_fused_kernel_rejects_bad_offsets_at_run_time():
    spec = tf.TensorSpec(None, tf.float32)

    @tf.function(input_signature=[spec])
    def run(offsets):
        return deform_roi_pool(tf.ones([1, 4, 4, 2]), tf.constant([[0.0, 0.0, 3.0, 3.0]]), [0], offsets, 2,
                               impl="fused")

    with pytest.raises(tf.errors.InvalidArgumentError, match="offsets must be"):
        run(tf.zeros([1, 3, 2, 2]))
    assert run(tf.zeros([1, 2, 2, 2])).shape == (1, 2, 2, 2)
