"""tfdet.ops.carafe against a NumPy reference written from the definition, fused vs composite, gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import carafe, loader

IMPLS = ["fused", "composite"] if loader.library_status().loaded else ["composite"]


def carafe_reference(features, masks, k, groups, s):
    """Direct loops over the definition (mmcv.ops.carafe in NHWC)."""
    n, h, w, c = features.shape
    r, cg = (k - 1) // 2, c // groups
    out = np.zeros((n, h * s, w * s, c), dtype=np.float64)
    for y in range(h * s):
        for x in range(w * s):
            for dy in range(k):
                for dx in range(k):
                    iy, ix = y // s + dy - r, x // s + dx - r
                    if not (0 <= iy < h and 0 <= ix < w):
                        continue
                    for g in range(groups):
                        weight = masks[:, y, x, g * k * k + dy * k + dx][:, None]
                        out[:, y, x, g * cg:(g + 1) * cg] += weight * features[:, iy, ix, g * cg:(g + 1) * cg]
    return out


def random_inputs(rng, n, h, w, c, k, groups, s, dtype=np.float64):
    features = rng.normal(size=(n, h, w, c)).astype(dtype)
    masks = rng.normal(size=(n, h * s, w * s, groups * k * k)).astype(dtype)
    return features, masks


CASES = [  # (n, h, w, c, k, groups, s)
    (1, 3, 3, 4, 3, 1, 2),
    (2, 4, 6, 6, 5, 1, 2),   # non-square, the paper's k=5
    (1, 5, 3, 8, 5, 2, 2),   # group_size 2, tall
    (1, 2, 3, 6, 3, 3, 4),   # scale 4
    (1, 3, 2, 4, 1, 2, 3),   # k=1: reassembly is a per-pixel scaling of nearest upsampling
    (2, 2, 2, 3, 5, 1, 1),   # s=1 and a kernel larger than the map: every border path
    (1, 2, 3, 214, 3, 2, 2),  # 107 channels per group: the CPU kernel's 64-, 32-, 8- and 1-channel blocks
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_reference(impl, case):
    n, h, w, c, k, groups, s = case
    features, masks = random_inputs(np.random.default_rng(0), *case)
    out = carafe(features, masks, k, groups, s, impl=impl)
    assert out.shape == (n, h * s, w * s, c)
    np.testing.assert_allclose(out.numpy(), carafe_reference(features, masks, k, groups, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,s", [(3, 2), (5, 4)])
def test_uniform_masks_are_box_filter_then_nearest_upsampling(impl, k, s):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    masks = np.full((2, 5 * s, 4 * s, k * k), 1.0 / (k * k), np.float32)
    box = tf.nn.depthwise_conv2d(features, tf.ones([k, k, 3, 1]) / (k * k), [1, 1, 1, 1], "SAME").numpy()
    expected = np.repeat(np.repeat(box, s, axis=1), s, axis=2)
    np.testing.assert_allclose(carafe(features, masks, k, 1, s, impl=impl), expected, rtol=1e-5, atol=1e-6)


def one_hot_masks(n, h, w, k, s, taps):
    """Masks selecting tap taps[g] = (dy, dx) for channel group g everywhere."""
    masks = np.zeros((n, h * s, w * s, len(taps) * k * k))
    for g, (dy, dx) in enumerate(taps):
        masks[..., g * k * k + dy * k + dx] = 1.0
    return masks


def shifted_nearest(features, oy, ox, s):
    """features[y//s + oy, x//s + ox], zero outside: nearest upsampling of a zero-filled shift."""
    n, h, w, c = features.shape
    padded = np.pad(features, [(0, 0), (abs(oy),) * 2, (abs(ox),) * 2, (0, 0)])
    shifted = padded[:, abs(oy) + oy:abs(oy) + oy + h, abs(ox) + ox:abs(ox) + ox + w]
    return np.repeat(np.repeat(shifted, s, axis=1), s, axis=2)


@pytest.mark.parametrize("impl", IMPLS)
def test_one_hot_taps_shift_with_zero_borders_per_group(impl):
    """Group 0 picks the top-left corner tap, group 1 the right neighbour: mask channel order is
    g*k*k + dy*k + dx, groups are contiguous channel blocks, and taps off the map read zero."""
    k, s = 5, 2
    features = np.random.default_rng(2).normal(size=(1, 4, 3, 4))
    masks = one_hot_masks(1, 4, 3, k, s, [(0, 0), (2, 3)])
    out = carafe(features, masks, k, 2, s, impl=impl).numpy()
    np.testing.assert_allclose(out[..., :2], shifted_nearest(features[..., :2], -2, -2, s), atol=1e-12)
    np.testing.assert_allclose(out[..., 2:], shifted_nearest(features[..., 2:], 0, 1, s), atol=1e-12)
    assert np.all(out[:, :4, :, :2] == 0) and np.all(out[:, :, -2:, 2:] == 0)  # the zero borders


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,groups", [((0, 3, 4, 8), 2), ((2, 0, 4, 8), 2), ((2, 3, 4, 0), 1)])
def test_empty_inputs(impl, shape, groups):
    n, h, w, c = shape
    features, masks = tf.zeros(shape), tf.ones([n, 2 * h, 2 * w, groups * 9])
    with tf.GradientTape() as tape:
        tape.watch([features, masks])
        out = carafe(features, masks, 3, groups, 2, impl=impl)
    assert out.shape == (n, 2 * h, 2 * w, c)
    grad_features, grad_masks = tape.gradient(out, [features, masks])
    assert grad_features.shape == features.shape and grad_masks.shape == masks.shape
    assert not np.any(grad_masks.numpy())  # no channels (or no pixels): nothing depends on the masks


@pytest.mark.skipif(len(IMPLS) < 2, reason="the fused op library is not built")
@pytest.mark.parametrize("case", [(2, 6, 5, 16, 5, 4, 2), (1, 4, 7, 8, 3, 1, 4), (1, 5, 4, 214, 5, 2, 2)])
def test_fused_matches_composite_with_gradients(case):
    n, h, w, c, k, groups, s = case
    features, masks = (tf.constant(x) for x in random_inputs(np.random.default_rng(3), *case, dtype=np.float32))
    upstream = tf.random.stateless_normal([n, h * s, w * s, c], seed=[1, 2])
    results = []
    for impl in ("fused", "composite"):
        with tf.GradientTape() as tape:
            tape.watch([features, masks])
            out = carafe(features, masks, k, groups, s, impl=impl)
            loss = tf.reduce_sum(out * upstream)
        results.append([out, *tape.gradient(loss, [features, masks])])
    for fused, composite in zip(*results):
        np.testing.assert_allclose(fused, composite, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [(1, 2, 3, 4, 3, 2, 2), (2, 2, 2, 2, 3, 1, 3)])
def test_gradients_match_numerical(impl, case):
    _, _, _, _, k, groups, s = case
    features, masks = random_inputs(np.random.default_rng(4), *case)
    theoretical, numerical = tf.test.compute_gradient(
        tf.function(lambda f, m: carafe(f, m, k, groups, s, impl=impl)), [tf.constant(features), tf.constant(masks)])
    for t, nm in zip(theoretical, numerical):
        np.testing.assert_allclose(t, nm, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_half_precision_computes_in_float32(impl):
    features, masks = random_inputs(np.random.default_rng(5), 1, 3, 3, 4, 3, 1, 2, dtype=np.float32)
    out = carafe(tf.cast(features, tf.float16), tf.cast(masks, tf.float16), 3, 1, 2, impl=impl)
    assert out.dtype == tf.float16
    np.testing.assert_allclose(out.numpy().astype(np.float64), carafe_reference(features, masks, 3, 1, 2),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_unknown_static_shapes_in_tf_function(impl):
    fn = tf.function(lambda f, m: carafe(f, m, 3, 2, 2, impl=impl),
                     input_signature=[tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, None, 18])])
    features, masks = random_inputs(np.random.default_rng(6), 1, 3, 2, 4, 3, 2, 2, dtype=np.float32)
    np.testing.assert_allclose(fn(features, masks), carafe_reference(features, masks, 3, 2, 2), rtol=1e-5, atol=1e-5)


BAD_STATIC = [  # (features shape, masks shape, k, groups, s, message fragment)
    ((1, 3, 3, 4), (1, 6, 6, 8), 3, 1, 2, "9 channels"),
    ((1, 3, 3, 4), (1, 6, 7, 9), 3, 1, 2, "width"),
    ((1, 3, 3, 4), (1, 3, 3, 9), 3, 1, 2, "height"),
    ((1, 3, 3, 4), (1, 6, 6, 16), 4, 1, 2, "odd"),
    ((1, 3, 3, 3), (1, 6, 6, 18), 3, 2, 2, "divisible"),
    ((3, 3, 4), (1, 6, 6, 9), 3, 1, 2, "rank 4"),
    ((2, 3, 3, 4), (1, 6, 6, 9), 3, 1, 2, "batch"),
    ((1, 3, 3, 4), (1, 6, 6, 9), 3, 0, 2, "group_size"),
    ((1, 3, 3, 4), (1, 3, 3, 9), 3, 1, 0, "scale_factor"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", BAD_STATIC, ids=[b[-1] for b in BAD_STATIC])
def test_bad_inputs_raise_value_error(impl, bad):
    fshape, mshape, k, groups, s, fragment = bad
    with pytest.raises(ValueError, match=fragment):
        carafe(tf.zeros(fshape), tf.zeros(mshape), k, groups, s, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mshape,fragment", [((1, 6, 6, 8), "channels"), ((1, 6, 4, 9), "scale_factor")])
def test_bad_dynamic_shapes_raise_invalid_argument(impl, mshape, fragment):
    fn = tf.function(lambda f, m: carafe(f, m, 3, 1, 2, impl=impl),
                     input_signature=[tf.TensorSpec([None, None, None, None]), tf.TensorSpec([None, None, None, None])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=fragment):
        fn(tf.zeros([1, 3, 3, 4]), tf.zeros(mshape))


def test_integer_inputs_are_rejected():
    with pytest.raises(ValueError, match="floating"):
        carafe(tf.zeros([1, 2, 2, 1], tf.int32), tf.zeros([1, 2, 2, 1]), 1, 1, 1)
