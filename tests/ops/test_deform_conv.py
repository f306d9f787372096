"""deform_conv2d against a NumPy reference written from the math, tf.nn.conv2d, numerical gradients,
and fused vs composite."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.deform_conv import deform_conv2d, output_size

IMPLS = ("fused", "composite")


def bilinear_zero(image, y, x):
    """image [H, W, C] sampled at (y, x), zero outside the image."""
    h, w, c = image.shape
    out = np.zeros(c, image.dtype)
    if not (-1 < y < h and -1 < x < w):
        return out
    y0, x0 = math.floor(y), math.floor(x)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * image[yy, xx]
    return out


def reference(inputs, offsets, kernel, mask=None, bias=None, strides=(1, 1), padding=(0, 0), dilations=(1, 1),
              groups=1, deformable_groups=1):
    n, _, _, c = inputs.shape
    kh, kw, cg, cout = kernel.shape
    taps, cd, og = kh * kw, c // deformable_groups, cout // groups
    _, out_h, out_w, _ = offsets.shape
    weights = kernel.reshape(taps, cg, cout)
    out = np.zeros((n, out_h, out_w, cout), inputs.dtype)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                cols = np.zeros((taps, c), inputs.dtype)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        for g in range(deformable_groups):
                            dy, dx = offsets[b, oy, ox, 2 * (g * taps + k)], offsets[b, oy, ox, 2 * (g * taps + k) + 1]
                            y = oy * strides[0] - padding[0] + i * dilations[0] + dy
                            x = ox * strides[1] - padding[1] + j * dilations[1] + dx
                            m = 1.0 if mask is None else mask[b, oy, ox, g * taps + k]
                            cols[k, g * cd:(g + 1) * cd] = m * bilinear_zero(inputs[b], y, x)[g * cd:(g + 1) * cd]
                for gr in range(groups):
                    out[b, oy, ox, gr * og:(gr + 1) * og] = np.einsum(
                        "kc,kco->o", cols[:, gr * cg:(gr + 1) * cg], weights[:, :, gr * og:(gr + 1) * og])
    return out if bias is None else out + bias


def make_case(seed, n=2, h=6, w=7, c=4, cout=6, kernel=(3, 3), strides=(1, 1), padding=(1, 1), dilations=(1, 1),
              groups=1, deformable_groups=1, modulated=True, bias=True, offset_scale=2.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    kh, kw = kernel
    out_h, out_w = output_size(h, w, kernel, strides, padding, dilations)
    taps = deformable_groups * kh * kw
    case = dict(
        inputs=rng.normal(size=(n, h, w, c)).astype(dtype),
        offsets=(offset_scale * rng.normal(size=(n, out_h, out_w, 2 * taps))).astype(dtype),
        kernel=rng.normal(size=(kh, kw, c // groups, cout)).astype(dtype),
        mask=rng.uniform(size=(n, out_h, out_w, taps)).astype(dtype) if modulated else None,
        bias=rng.normal(size=(cout,)).astype(dtype) if bias else None)
    attrs = dict(strides=strides, padding=padding, dilations=dilations, groups=groups,
                 deformable_groups=deformable_groups)
    return case, attrs


CONFIGS = {
    "basic": {},
    "v1_no_bias": dict(modulated=False, bias=False),
    "stride2": dict(strides=(2, 2), h=7, w=8),
    "dilation2": dict(dilations=(2, 2), padding=(2, 2)),
    "groups2": dict(groups=2, c=4, cout=6),
    "deformable_groups2": dict(deformable_groups=2),
    "groups2_dg4": dict(groups=2, deformable_groups=4, c=8),
    "non_square": dict(kernel=(3, 2), h=5, w=8, strides=(1, 2), padding=(1, 0), dilations=(2, 1)),
    "outside": dict(offset_scale=8.0),
    "1x1": dict(kernel=(1, 1), padding=(0, 0)),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_reference(impl, config):
    case, attrs = make_case(sorted(CONFIGS).index(config), **CONFIGS[config])
    got = deform_conv2d(**case, **attrs, impl=impl).numpy()
    want = reference(**{k: v for k, v in case.items()}, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_offsets_equal_conv2d(impl):
    case, attrs = make_case(1, n=2, h=9, w=10, c=5, cout=7, strides=(2, 1), padding=(1, 2), modulated=False,
                            dtype=np.float32)
    case["offsets"] = np.zeros_like(case["offsets"])
    got = deform_conv2d(**case, **attrs, impl=impl)
    want = tf.nn.conv2d(case["inputs"], case["kernel"], strides=[1, 2, 1, 1],
                        padding=[[0, 0], [1, 1], [2, 2], [0, 0]]) + case["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_offsets_dilated_grouped_equal_conv2d(impl):
    case, attrs = make_case(2, n=1, h=9, w=9, c=4, cout=6, dilations=(2, 2), padding=(2, 2), groups=2,
                            modulated=False, bias=False, dtype=np.float32)
    case["offsets"] = np.zeros_like(case["offsets"])
    got = deform_conv2d(**case, **attrs, impl=impl)
    want = tf.nn.conv2d(case["inputs"], case["kernel"], strides=1, padding=[[0, 0], [2, 2], [2, 2], [0, 0]],
                        dilations=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_offsets_equal_shifted_conv(impl):
    case, attrs = make_case(3, n=1, h=8, w=8, c=3, cout=4, padding=(1, 1), modulated=False, bias=False)
    shift_y, shift_x = 2, -1
    offsets = np.zeros_like(case["offsets"])
    offsets[..., 0::2], offsets[..., 1::2] = shift_y, shift_x
    got = deform_conv2d(case["inputs"], offsets, case["kernel"], **attrs, impl=impl)
    # Sampling at (y + 2, x - 1) is a valid convolution over a window of the zero-padded input moved
    # by (2, -1): kernel point (i, j) of output (oy, ox) reads input[oy - 1 + i + 2, ox - 1 + j - 1].
    margin = 4
    big = np.pad(case["inputs"], [(0, 0), (margin, margin), (margin, margin), (0, 0)])
    top, left = margin - 1 + shift_y, margin - 1 + shift_x
    window = big[:, top:top + 8 + 2, left:left + 8 + 2]
    want = tf.nn.conv2d(window, case["kernel"], strides=1, padding="VALID")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_offsets_far_outside_give_bias_only(impl):
    case, attrs = make_case(4, n=1, h=4, w=4)
    offsets = np.full_like(case["offsets"], 100.0)
    got = deform_conv2d(case["inputs"], offsets, case["kernel"], case["mask"], case["bias"], **attrs, impl=impl)
    np.testing.assert_allclose(got, np.broadcast_to(case["bias"], got.shape), atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl):
    case, attrs = make_case(5, n=0)
    variables = {k: tf.constant(v) for k, v in case.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(variables.values()))
        out = deform_conv2d(**variables, **attrs, impl=impl)
    assert out.shape == (0, 6, 7, 6)
    grads = tape.gradient(out, variables)
    np.testing.assert_array_equal(grads["kernel"], 0.0)
    assert grads["inputs"].shape == (0, 6, 7, 4)


def _fractional_case(seed, **kwargs):
    """Offsets whose sample positions stay >= 0.1 away from integers, where bilinear sampling has kinks."""
    case, attrs = make_case(seed, **kwargs)
    rng = np.random.default_rng(seed + 100)
    case["offsets"] = rng.integers(-3, 3, size=case["offsets"].shape) + rng.uniform(0.1, 0.9, case["offsets"].shape)
    return case, attrs


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", ["basic", "groups2_dg4", "non_square", "v1_no_bias"])
def test_gradients_match_numerical(impl, config):
    kwargs = dict(CONFIGS[config], n=1, h=4, w=4, cout=4)
    if config == "non_square":
        kwargs.update(h=4, w=6)
    case, attrs = _fractional_case(11, **kwargs)
    names = [k for k, v in case.items() if v is not None]

    @tf.function
    def f(*args):
        values = dict(case, **dict(zip(names, args)))
        return deform_conv2d(**values, **attrs, impl=impl)

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(case[k]) for k in names], delta=1e-5)
    for name, t, nm in zip(names, theoretical, numerical):
        np.testing.assert_allclose(t, nm, rtol=1e-5, atol=1e-6, err_msg=f"gradient w.r.t. {name}")


def test_fused_matches_composite_forward_and_gradients():
    case, attrs = _fractional_case(21, n=2, h=9, w=11, c=8, cout=6, groups=2, deformable_groups=2,
                                   strides=(2, 1), dtype=np.float32)
    case["offsets"] = case["offsets"].astype(np.float32)
    results = {}
    for impl in IMPLS:
        variables = {k: tf.constant(v) for k, v in case.items()}
        with tf.GradientTape() as tape:
            tape.watch(list(variables.values()))
            out = deform_conv2d(**variables, **attrs, impl=impl)
            loss = tf.reduce_sum(out * tf.sin(out))
        results[impl] = (out, tape.gradient(loss, variables))
    np.testing.assert_allclose(results["fused"][0], results["composite"][0], rtol=1e-4, atol=1e-4)
    for name in case:
        np.testing.assert_allclose(results["fused"][1][name], results["composite"][1][name], rtol=1e-3, atol=1e-3,
                                   err_msg=name)


def test_float16_inputs_compute_in_float32():
    case, attrs = make_case(6, n=1, dtype=np.float32)
    half = {k: v.astype(np.float16) for k, v in case.items()}
    got = deform_conv2d(**half, **attrs)
    assert got.dtype == tf.float16
    want = reference(**{k: v.astype(np.float64) for k, v in half.items()}, **attrs)
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, message", [
    (dict(groups=3), "divisible by groups"),
    (dict(deformable_groups=3), "divisible by deformable_groups"),
    (dict(offsets_channels=10), "offsets must have 36 channels"),
    (dict(mask_channels=4), "mask must have 18 channels"),
    (dict(offsets_size=(5, 7)), "offsets must cover the output size"),
    (dict(kernel_cin=3), "kernel must be"),
    (dict(inputs_rank=3), "inputs must have rank 4"),
])
def test_bad_inputs_raise_value_error(impl, bad, message):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(1, 6, 7, 4)).astype(np.float32)
    offsets = np.zeros((1,) + bad.get("offsets_size", (6, 7)) + (bad.get("offsets_channels", 36),), np.float32)
    mask = np.ones((1, 6, 7, bad.get("mask_channels", 18)), np.float32)
    kernel = np.ones((3, 3, bad.get("kernel_cin", 4 // bad.get("groups", 1) if 4 % bad.get("groups", 1) == 0 else 1),
                      6), np.float32)
    if "inputs_rank" in bad:
        inputs = inputs[0]
    with pytest.raises(ValueError, match=message):
        deform_conv2d(inputs, offsets, kernel, mask, padding=1, groups=bad.get("groups", 1),
                      deformable_groups=bad.get("deformable_groups", 2), impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_dynamic_shapes_are_clear_errors(impl):
    """Shapes unknown at trace time, the kernel's included, are checked at run time before any work, with
    the same messages in both impls (the composite used to return a wrongly shaped output)."""
    spec = tf.TensorSpec([None, None, None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, spec])
    def run(inputs, offsets, mask, kernel):
        return deform_conv2d(inputs, offsets, kernel, mask, padding=1, impl=impl)

    inputs, kernel = tf.ones([1, 5, 5, 4]), tf.ones([3, 3, 4, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"offsets must be \[N, Ho, Wo, 2 \* deformable_groups "
                                                             r"\* kh \* kw\] = \[1 5 5 18\], got \[1 4 5 18\]"):
        run(inputs, tf.zeros([1, 4, 5, 18]), tf.ones([1, 5, 5, 9]), kernel)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask must be \[N, Ho, Wo, deformable_groups \* kh \* "
                                                             r"kw\] = \[1 5 5 9\], got \[1 5 5 3\]"):
        run(inputs, tf.zeros([1, 5, 5, 18]), tf.ones([1, 5, 5, 3]), kernel)
    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel must be"):
        run(tf.ones([1, 5, 5, 3]), tf.zeros([1, 5, 5, 18]), tf.ones([1, 5, 5, 9]), kernel)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"offsets must be .* got \[1 5 5 8\]"):
        run(inputs, tf.zeros([1, 5, 5, 8]), tf.ones([1, 5, 5, 4]), tf.ones([2, 2, 4, 2]))  # kernel 2x2: Ho = 6
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs \[1 1 1 4\] with padding \(1, 1\) are smaller "
                                                             r"than the dilated 5x5 kernel \(it spans 5x5 pixels\)"):
        run(tf.ones([1, 1, 1, 4]), tf.zeros([1, 1, 1, 50]), tf.ones([1, 1, 1, 25]), tf.ones([5, 5, 4, 2]))
    assert run(inputs, tf.zeros([1, 5, 5, 18]), tf.ones([1, 5, 5, 9]), kernel).shape == (1, 5, 5, 2)
    assert run(inputs, tf.zeros([1, 6, 6, 8]), tf.ones([1, 6, 6, 4]), tf.ones([2, 2, 4, 2])).shape == (1, 6, 6, 2)


def test_fused_kernel_itself_rejects_bad_shapes():
    """The C++ kernels validate on their own (called without the Python checks)."""
    from tfdet.ops import loader

    ops = loader.ops_module()
    inputs, mask = tf.ones([1, 5, 5, 4]), tf.ones([1, 5, 5, 9])
    attrs = dict(padding=[1, 1], modulated=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"offsets must be \[N, Ho, Wo, .*\] = \[1, 5, 5, 18\]"):
        ops.tfdet_deform_im2col(inputs, tf.zeros([1, 4, 5, 18]), mask, [3, 3], **attrs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the dilated 9x9 kernel"):
        ops.tfdet_deform_im2col(inputs, tf.zeros([1, 1, 1, 162]), tf.ones([1, 1, 1, 81]), [9, 9], **attrs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be positive"):
        ops.tfdet_deform_im2col(inputs, tf.zeros([1, 5, 5, 18]), mask, [0, 3], **attrs)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="kernel_size"):
        ops.tfdet_deform_im2col(inputs, tf.zeros([1, 5, 5, 18]), mask, [3, 3, 1], **attrs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_columns must be"):
        ops.tfdet_deform_col2im(inputs, tf.zeros([1, 5, 5, 18]), mask, [3, 3], tf.zeros([1, 5, 5, 35]), **attrs)
