"""No crash and no hang in any op, for any finite or non-finite input: NaN / inf coordinates
and offsets give the result each op documents, the same for the fused and the composite impl, and
absurd sampling grids are rejected before any work.

Each case runs in a child process (tests/ops/isolated.py), so a segfault fails its test instead of the
suite. The cases compare against the NumPy references of the ops' own tests, on inputs where the
non-finite entries are replaced by what the documentation says they amount to.
"""

import numpy as np
import pytest

from tests.ops.isolated import run_isolated

MODULE = "tests.ops.test_nonfinite_inputs"
IMPLS = ("fused", "composite")
NAN, INF = float("nan"), float("inf")


def _run_both(fn):
    """{impl: fn(impl)} for both impls, and asserts they agree (NaN where the other has NaN)."""
    results = {impl: fn(impl) for impl in IMPLS}
    for a, b in zip(results["fused"], results["composite"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True)
    return results["fused"]


def _pool_and_grad(op, features, boxes, indices, impl, offsets=None, **kwargs):
    """(output, d sum(output) / d features[, d ... / d offsets]) with an all-ones upstream gradient (finite
    even where the output is NaN); unconnected gradients are zeros."""
    import tensorflow as tf

    features = tf.constant(features, tf.float32)
    watched = [features] + ([] if offsets is None else [tf.constant(offsets, tf.float32)])
    with tf.GradientTape() as tape:
        tape.watch(watched)
        extra = {} if offsets is None else {"offsets": watched[1]}
        out = op(features, tf.constant(boxes, tf.float32), indices, impl=impl, **extra, **kwargs)
    grads = tape.gradient(out, watched, output_gradients=tf.ones_like(out),
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [out.numpy()] + [g.numpy() for g in grads]


def case_roi_align_non_finite_boxes():
    from tests.ops.test_roi_align import reference_roi_align
    from tfdet.ops import roi_align

    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 16, 16, 4))
    good = [1.3, 2.2, 9.1, 9.7]
    boxes = np.array([
        [NAN, 2, 9, 9],       # the segfault
        good,
        [-INF, 2, 9, 9],
        [1, 2, 9, INF],
        [-3e38, 1, 3e38, 5],  # finite corners, width overflows to inf in float32
        [2, 3, NAN, NAN],
    ], np.float32)
    defined = np.array([False, True, False, False, False, False])
    for sampling_ratio in (0, 2):
        out, grad = _run_both(lambda impl: _pool_and_grad(roi_align, features, boxes, [0] * 6, impl, output_size=7,
                                                          sampling_ratio=sampling_ratio))
        assert np.isnan(out[~defined]).all(), "every bin of a non-finite box is NaN"
        np.testing.assert_allclose(out[defined], reference_roi_align(features, boxes[defined], [0], 7, 7, 1.0,
                                                                     sampling_ratio, True), atol=1e-5)
        # Non-finite boxes pass no gradient: the same as pooling the good box alone.
        _, alone = _pool_and_grad(roi_align, features, boxes[defined], [0], "composite", output_size=7,
                                  sampling_ratio=sampling_ratio)
        np.testing.assert_allclose(grad, alone, atol=1e-5)


def case_roi_align_huge_finite_boxes():
    """Boxes of 1e30 pixels with a fixed sampling_ratio: every sample lies far outside and reads 0."""
    from tfdet.ops import roi_align

    features = np.ones((1, 16, 16, 4))
    boxes = np.array([[-1e30, -1e30, 1e30, 1e30], [1e30, 1e30, 2e30, 2e30], [0, 0, 3e38, 3e38]], np.float32)
    out, grad = _run_both(lambda impl: _pool_and_grad(roi_align, features, boxes, [0, 0, 0], impl, output_size=7,
                                                      sampling_ratio=2))
    assert (out == 0).all() and (grad == 0).all()


def case_roi_ops_reject_absurd_grids_before_work():
    """The issue's hangs (a 1e9-pixel box with sampling_ratio=0, sampling_ratio=2**20) are errors that name
    the value and the limit, in both impls and in the kernels themselves (forward and gradient ops)."""
    import tensorflow as tf

    from tfdet.ops import deform_roi_pool, loader, roi_align

    features = tf.ones((1, 16, 16, 4))
    huge = tf.constant([[0.0, 0, 9, 9], [0, 0, 1e9, 1e9]])
    cases = [(dict(sampling_ratio=0), huge, r"box 1 has an adaptive sampling grid \(sampling_ratio = 0\) of "
              r"142857136 x 142857136 samples per bin, beyond the limit of 64 x 64"),
             (dict(sampling_ratio=2**20), huge[:1], r"sampling_ratio = 1048576 exceeds the limit of 64 x 64")]
    for op in (roi_align, deform_roi_pool):
        for impl in IMPLS:
            for kwargs, boxes, message in cases:
                with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                    op(features, boxes, [0] * len(boxes), output_size=7, impl=impl, **kwargs)
    ops = loader.ops_module()
    for kwargs, boxes, message in cases:
        indices = tf.zeros([len(boxes)], tf.int32)
        with pytest.raises(tf.errors.InvalidArgumentError, match="roi_align: " + message):
            ops.tfdet_roi_align(features, boxes, indices, pooled_height=7, pooled_width=7, **kwargs)
        with pytest.raises(tf.errors.InvalidArgumentError, match="roi_align_grad: " + message):
            ops.tfdet_roi_align_grad(tf.ones([len(boxes), 7, 7, 4]), boxes, indices, [1, 16, 16, 4], **kwargs)
        with pytest.raises(tf.errors.InvalidArgumentError, match="deform_roi_pool: " + message):
            ops.tfdet_deform_roi_pool(features, boxes, indices, tf.zeros([0]), pooled_height=7, pooled_width=7,
                                      has_offsets=False, **kwargs)
        with pytest.raises(tf.errors.InvalidArgumentError, match="deform_roi_pool_grad: " + message):
            ops.tfdet_deform_roi_pool_grad(tf.ones([len(boxes), 7, 7, 4]), features, boxes, indices, tf.zeros([0]),
                                           has_offsets=False, **kwargs)


def case_deform_roi_pool_non_finite_offsets():
    from tests.ops.test_deform_roi_pool import reference
    from tfdet.ops import deform_roi_pool

    rng = np.random.default_rng(1)
    features = rng.normal(size=(1, 16, 16, 3))
    boxes = np.array([[1.3, 2.2, 9.1, 9.7], [0.4, 0.7, 12.3, 14.1], [NAN, 1, 5, 5]], np.float32)
    offsets = (0.1 * rng.normal(size=(3, 7, 7, 2))).astype(np.float32)
    nan_bins, outside_bins = [(0, 0, 0), (0, 4, 4)], [(0, 1, 1), (1, 2, 2), (1, 3, 3)]
    offsets[0, 0, 0, 0] = NAN
    offsets[0, 4, 4, 1] = NAN
    offsets[0, 1, 1, 0] = INF
    offsets[1, 2, 2, 1] = -INF
    offsets[1, 3, 3] = 1e30
    for sampling_ratio in (0, 2):
        out, grad_features, grad_offsets = _run_both(lambda impl: _pool_and_grad(
            deform_roi_pool, features, boxes, [0, 0, 0], impl, offsets, output_size=7, sampling_ratio=sampling_ratio))
        assert np.isnan(out[2]).all(), "every bin of a non-finite box is NaN"
        for k, ph, pw in nan_bins:
            assert np.isnan(out[k, ph, pw]).all()
        for k, ph, pw in outside_bins:
            assert (out[k, ph, pw] == 0).all()
        # The other bins are unchanged: the reference with the special bins' offsets made finite.
        finite = np.nan_to_num(offsets[:2], nan=0.0, posinf=0.0, neginf=0.0)
        want = reference(features, boxes[:2], [0, 0], finite, (7, 7), 1.0, sampling_ratio, 0.1)
        special = np.zeros((2, 7, 7), bool)
        for k, ph, pw in nan_bins + outside_bins:
            special[k, ph, pw] = True
        np.testing.assert_allclose(out[:2][~special], want[~special], atol=1e-5)
        # Special bins pass no gradient (to the features or their offsets); the others as with finite offsets.
        assert (grad_offsets[2] == 0).all() and all((grad_offsets[b] == 0).all() for b in nan_bins + outside_bins)
        upstream = np.where(special[..., None], 0.0, 1.0)
        import tensorflow as tf

        features_t, offsets_t = tf.constant(features, tf.float32), tf.constant(finite, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch([features_t, offsets_t])
            plain = deform_roi_pool(features_t, boxes[:2], [0, 0], offsets_t, 7, sampling_ratio=sampling_ratio,
                                    impl="composite")
        want_f, want_o = tape.gradient(plain, [features_t, offsets_t], output_gradients=tf.constant(
            np.broadcast_to(upstream, plain.shape), tf.float32))
        np.testing.assert_allclose(grad_features, want_f.numpy(), atol=1e-4)
        np.testing.assert_allclose(grad_offsets[:2], want_o.numpy(), atol=1e-4)


def case_deform_conv2d_non_finite_offsets():
    import tensorflow as tf

    from tests.ops.test_deform_conv import reference
    from tfdet.ops.deform_conv import deform_conv2d

    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    offsets = (0.7 * rng.normal(size=(1, 5, 6, 18))).astype(np.float32)
    mask = rng.uniform(size=(1, 5, 6, 9)).astype(np.float32)
    offsets[0, 0, 0, 2 * 4] = NAN         # pixel (0, 0), kernel point 4: dy
    offsets[0, 2, 3, 2 * 1 + 1] = NAN     # pixel (2, 3), kernel point 1: dx
    offsets[0, 1, 1, 2 * 0] = INF         # outside: reads 0
    offsets[0, 3, 2, 2 * 5 + 1] = -INF
    offsets[0, 4, 4, 2 * 7:2 * 7 + 2] = 1e30
    offsets[0, 4, 5, 2 * 2] = 1e30        # outside with a NaN mask value: NaN * 0
    mask[0, 4, 5, 2] = NAN
    nan_pixels = [(0, 0), (2, 3), (4, 5)]

    def run(impl):
        values = [tf.constant(v) for v in (inputs, offsets, mask, kernel)]
        with tf.GradientTape() as tape:
            tape.watch(values)
            out = deform_conv2d(values[0], values[1], values[3], values[2], padding=1, impl=impl)
        grads = tape.gradient(out, values, output_gradients=tf.ones_like(out))
        return [out.numpy()] + [g.numpy() for g in grads]

    out, grad_inputs, grad_offsets, grad_mask, grad_kernel = _run_both(run)
    # Forward: the reference on offsets where +-inf is "far outside", NaN at the pixels that use a NaN point.
    far = np.nan_to_num(offsets, nan=1e6, posinf=1e6, neginf=-1e6)
    want = reference(inputs.astype(np.float64), far.astype(np.float64), kernel.astype(np.float64),
                     np.nan_to_num(mask, nan=0.0).astype(np.float64), padding=(1, 1))
    for oy, ox in nan_pixels:
        assert np.isnan(out[0, oy, ox]).all()
        want[0, oy, ox] = NAN
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, equal_nan=True)
    # Gradients: NaN and far-outside points pass nothing to the inputs or to their offsets; a NaN point's mask
    # value gets NaN; everything else is finite.
    assert np.isfinite(grad_inputs).all() and np.isfinite(grad_offsets).all()
    for oy, ox, coordinate in ((0, 0, 8), (2, 3, 3), (1, 1, 0), (3, 2, 11), (4, 4, 14)):
        point = coordinate // 2
        assert (grad_offsets[0, oy, ox, 2 * point:2 * point + 2] == 0).all()
    assert np.isnan(grad_mask[0, 0, 0, 4]) and np.isnan(grad_mask[0, 2, 3, 1])
    assert grad_mask[0, 1, 1, 0] == 0 and np.isfinite(np.delete(grad_mask.ravel(), [4, (2 * 6 + 3) * 9 + 1])).all()
    values = [tf.constant(v, tf.float64) for v in (inputs, far, np.nan_to_num(mask, nan=0.0), kernel)]
    with tf.GradientTape() as tape:
        tape.watch(values)
        plain = deform_conv2d(values[0], values[1], values[3], values[2], padding=1, impl="composite")
    want_inputs = tape.gradient(plain, values[0], output_gradients=tf.ones_like(plain)).numpy()
    np.testing.assert_allclose(grad_inputs, want_inputs, rtol=1e-4, atol=1e-4)
    assert np.isnan(grad_kernel).any() and np.isfinite(grad_kernel[0, 0]).all()


def case_carafe_non_finite_values():
    """A NaN mask value of a tap outside the map is never read; other NaNs propagate, in both impls."""
    import tensorflow as tf

    from tests.ops.test_carafe import carafe_reference
    from tfdet.ops import carafe

    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 4, 4, 4)).astype(np.float32)
    masks = rng.normal(size=(1, 8, 8, 2 * 9)).astype(np.float32)
    masks[0, 0, 0, 0] = NAN   # output (0, 0), tap (0, 0): reads (-1, -1), outside
    masks[0, 7, 7, 9 + 8] = INF   # output (7, 7), group 1, tap (2, 2): reads (4, 4), outside
    masks[0, 3, 3, 4] = NAN   # an inside tap: group 0 of output (3, 3) is NaN
    features[0, 0, 3, 1] = INF  # inf feature: every output whose window holds it gets inf or NaN

    def run(impl):
        values = [tf.constant(features), tf.constant(masks)]
        with tf.GradientTape() as tape:
            tape.watch(values)
            out = carafe(values[0], values[1], kernel_size=3, group_size=2, scale_factor=2, impl=impl)
        grads = tape.gradient(out, values, output_gradients=tf.ones_like(out))
        return [out.numpy()] + [g.numpy() for g in grads]

    out, grad_features, grad_masks = _run_both(run)
    want = carafe_reference(features.astype(np.float64), masks.astype(np.float64), 3, 2, 2)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert np.isfinite(out[0, 0, 0]).all() and np.isfinite(out[0, 7, 7]).all()
    assert np.isnan(out[0, 3, 3, :2]).all() and np.isfinite(out[0, 3, 3, 2:]).all()
    assert grad_masks[0, 0, 0, 0] == 0 and grad_masks[0, 7, 7, 17] == 0


def case_run_isolated_reports_a_crash():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.parametrize("case", [
    "case_roi_align_non_finite_boxes",
    "case_roi_align_huge_finite_boxes",
    "case_roi_ops_reject_absurd_grids_before_work",
    "case_deform_roi_pool_non_finite_offsets",
    "case_deform_conv2d_non_finite_offsets",
    "case_carafe_non_finite_values",
])
def test_in_a_child_process(case):
    run_isolated(MODULE, case)


def test_a_crashing_child_fails_its_test():
    with pytest.raises(pytest.fail.Exception, match="crashed with SIGSEGV"):
        run_isolated(MODULE, "case_run_isolated_reports_a_crash")
