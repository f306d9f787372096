"""Deformable convolution v1/v2 (torchvision.ops.deform_conv2d semantics, NHWC): fused kernel and
composite stock-TF twin."""

import tensorflow as tf

from tfdet.ops import loader
from tfdet.ops._inputs import assert_that, compute_dtype, floating, pair

_OP = "deform_conv2d"


def _static_dim(tensor, axis):
    return tensor.shape[axis] if tensor.shape.rank is not None else None


def _dims(tensor, rank=4):
    """The dimensions of `tensor` (of the given rank): ints where static, scalar int32 tensors elsewhere."""
    dynamic = tf.shape(tensor, out_type=tf.int32)
    return [_static_dim(tensor, i) if _static_dim(tensor, i) is not None else dynamic[i] for i in range(rank)]


def output_size(height, width, kernel_size, strides=1, padding=0, dilations=1):
    """(Ho, Wo) of a convolution with symmetric zero padding: floor((H + 2p - d(k-1) - 1) / s) + 1."""
    (kh, kw), (sh, sw) = pair(kernel_size, _OP, "kernel_size"), pair(strides, _OP, "strides")
    (ph, pw), (dh, dw) = pair(padding, _OP, "padding", 0), pair(dilations, _OP, "dilations")
    return (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def deform_conv2d(inputs, offsets, kernel, mask=None, bias=None, strides=1, padding=0, dilations=1, groups=1,
                  deformable_groups=1, impl=None, name=None):
    """Deformable 2-D convolution (DCN v1; modulated DCN v2 when `mask` is given).

    For output pixel (oy, ox), kernel point k = i * kw + j and deformable group g, the input is sampled
    bilinearly (zero outside the image) at
      y = oy * stride_h - pad_h + i * dilation_h + offsets[n, oy, ox, 2 * (g * kh * kw + k)]
      x = ox * stride_w - pad_w + j * dilation_w + offsets[n, oy, ox, 2 * (g * kh * kw + k) + 1]
    for the C / deformable_groups channels of group g, scaled by mask[n, oy, ox, g * kh * kw + k].

    Args:
      inputs: [N, H, W, C] float.
      offsets: [N, Ho, Wo, 2 * deformable_groups * kh * kw], (dy, dx) pairs per kernel point.
      kernel: [kh, kw, C / groups, Cout].
      mask: None (v1) or [N, Ho, Wo, deformable_groups * kh * kw] modulation (v2).
      bias: None or [Cout].
      strides, padding, dilations: int or (height, width); padding is symmetric zero padding.
      groups: convolution groups (C and Cout divisible by it).
      deformable_groups: channel groups that share one set of offsets (C divisible by it).
      impl: None (fused when the op library is loaded), "fused" or "composite".

    Returns:
      [N, Ho, Wo, Cout] with Ho, Wo = output_size(H, W, (kh, kw), strides, padding, dilations), the dtype
      of `inputs`. Differentiable w.r.t. inputs, offsets, mask, kernel and bias.

    Every shape may be unknown when traced (tf.function with [None] * 4 signatures, the kernel's too);
    what the static shapes cannot show is checked at run time, before any work, with the same messages
    (InvalidArgumentError) in both impls.

    Non-finite offsets (both impls alike, torchvision's forward convention):
      - A sampling point at a NaN position (a NaN offset) reads NaN, so every output that uses it is NaN.
        It passes no gradient to the inputs or to its offsets; its mask value's gradient is NaN
        (d (m * NaN) / dm).
      - A point at +-infinity, like any point wholly outside the image, reads 0 (NaN when its mask value
        is NaN or infinite: m * 0) and passes zero gradients to the inputs and offsets.
      Returning 0 for NaN offsets (mmcv's forward) would hide a diverged offset branch; NaN propagates
      the failure to the loss. Other NaN/inf values (inputs, mask, kernel) propagate through the
      arithmetic; which gradient elements they reach may differ between the impls.
    """
    strides, padding = pair(strides, _OP, "strides"), pair(padding, _OP, "padding", 0)
    dilations = pair(dilations, _OP, "dilations")
    groups, deformable_groups = int(groups), int(deformable_groups)
    if groups < 1 or deformable_groups < 1:
        raise ValueError(f"deform_conv2d: groups ({groups}) and deformable_groups ({deformable_groups}) must be >= 1.")
    impl = loader.resolve_impl(impl)
    with tf.name_scope(name or "deform_conv2d"):
        inputs = floating(inputs, _OP, "inputs")
        out_dtype = inputs.dtype
        compute = compute_dtype(out_dtype)
        inputs = tf.cast(inputs, compute)
        offsets = tf.cast(offsets, compute)
        kernel = tf.cast(kernel, compute)
        mask = None if mask is None else tf.cast(mask, compute)
        bias = None if bias is None else tf.cast(bias, compute)
        _check_static(inputs, offsets, kernel, mask, bias, strides, padding, dilations, groups, deformable_groups)
        with tf.control_dependencies(_run_time_checks(inputs, offsets, kernel, mask, bias, strides, padding,
                                                      dilations, groups, deformable_groups)):
            inputs = tf.identity(inputs)
        if impl == "fused":
            out = _deform_conv2d_fused(inputs, offsets, kernel, mask, strides, padding, dilations, groups,
                                       deformable_groups)
            out = out if bias is None else out + bias
        else:
            out = deform_conv2d_composite(inputs, offsets, kernel, mask, bias, strides, padding, dilations, groups,
                                          deformable_groups)
        return tf.cast(out, out_dtype)


def _check_static(inputs, offsets, kernel, mask, bias, strides, padding, dilations, groups, deformable_groups):
    """Raises ValueError for shapes that are wrong already at trace time (_run_time_checks does the rest)."""
    for tensor, arg, layout in ((inputs, "inputs", "[N, H, W, C]"), (offsets, "offsets", "[N, Ho, Wo, 2*dg*kh*kw]"),
                                (kernel, "kernel", "[kh, kw, C / groups, Cout]")):
        if tensor.shape.rank is not None and tensor.shape.rank != 4:
            raise ValueError(f"deform_conv2d: {arg} must have rank 4 {layout}, got shape {tensor.shape}.")
    kh, kw, cin_g, cout = (_static_dim(kernel, i) for i in range(4))
    cin = _static_dim(inputs, 3)
    if cin is not None:
        if cin % groups:
            raise ValueError(f"deform_conv2d: inputs channels ({cin}) must be divisible by groups ({groups}).")
        if cin % deformable_groups:
            raise ValueError(f"deform_conv2d: inputs channels ({cin}) must be divisible by deformable_groups "
                             f"({deformable_groups}).")
        if cin_g is not None and cin_g != cin // groups:
            raise ValueError(f"deform_conv2d: kernel must be [kh, kw, C / groups = {cin // groups}, Cout], "
                             f"got {kernel.shape}.")
    if cout is not None and cout % groups:
        raise ValueError(f"deform_conv2d: kernel's Cout ({cout}) must be divisible by groups ({groups}).")
    if bias is not None and (bias.shape.rank not in (None, 1) or (cout is not None and bias.shape[0] not in (None, cout))):
        raise ValueError(f"deform_conv2d: bias must be [Cout] = [{cout}], got shape {bias.shape}.")
    if kh is None or kw is None:
        return  # the rest depends on the kernel's spatial size: checked at run time
    taps = deformable_groups * kh * kw
    h, w = _static_dim(inputs, 1), _static_dim(inputs, 2)
    expected_hw = None
    if h is not None and w is not None:
        expected_hw = output_size(h, w, (kh, kw), strides, padding, dilations)
        if min(expected_hw) < 1:
            raise ValueError(f"deform_conv2d: inputs {inputs.shape} with padding {padding} are smaller than the "
                             f"dilated {kh}x{kw} kernel.")
    for tensor, arg, channels in ((offsets, "offsets", 2 * taps), (mask, "mask", taps)):
        if tensor is None or tensor.shape.rank is None:
            continue
        if tensor.shape.rank != 4:
            raise ValueError(f"deform_conv2d: {arg} must have rank 4, got shape {tensor.shape}.")
        if tensor.shape[3] is not None and tensor.shape[3] != channels:
            raise ValueError(f"deform_conv2d: {arg} must have {channels} channels (deformable_groups "
                             f"{deformable_groups} x {kh}x{kw} kernel{' x 2' if arg == 'offsets' else ''}), "
                             f"got shape {tensor.shape}.")
        if expected_hw is not None and None not in tensor.shape[1:3] and tuple(tensor.shape[1:3]) != expected_hw:
            raise ValueError(f"deform_conv2d: {arg} must cover the output size {expected_hw}, got shape "
                             f"{tensor.shape}.")


def _run_time_checks(inputs, offsets, kernel, mask, bias, strides, padding, dilations, groups, deformable_groups):
    """Assertions for what _check_static could not decide (a dimension unknown when traced), to run before
    any work; none when every shape is static. The fused kernel checks the same again for direct callers."""
    tensors = [t for t in (inputs, offsets, kernel, mask, bias) if t is not None]
    if all(t.shape.is_fully_defined() for t in tensors):
        return []
    n, h, w, c = _dims(inputs)
    kh, kw, cin_g, cout = _dims(kernel)
    span_h, span_w = dilations[0] * (kh - 1) + 1, dilations[1] * (kw - 1) + 1
    out_h = (h + 2 * padding[0] - span_h) // strides[0] + 1
    out_w = (w + 2 * padding[1] - span_w) // strides[1] + 1
    taps = deformable_groups * kh * kw
    # Each condition holds vacuously when an earlier one fails, so that the first failure is the one reported.
    divisible = tf.equal(c % groups, 0) & tf.equal(c % deformable_groups, 0)
    large_enough = tf.logical_and(h + 2 * padding[0] >= span_h, w + 2 * padding[1] >= span_w)
    checks = [
        (divisible, "deform_conv2d: inputs channels ({}) must be divisible by groups ({}) and deformable_groups ({})",
         [c, groups, deformable_groups]),
        (~divisible | (tf.equal(cin_g * groups, c) & tf.equal(cout % groups, 0)),
         "deform_conv2d: kernel must be [kh, kw, C / groups, Cout] with C = {} and Cout divisible by groups = {}, "
         "got {}", [c, groups, tf.shape(kernel)]),
        (large_enough,
         f"deform_conv2d: inputs {{}} with padding ({padding[0]}, {padding[1]}) are smaller than the dilated {{}}x{{}} "
         f"kernel (it spans {{}}x{{}} pixels)", [tf.shape(inputs), kh, kw, span_h, span_w]),
    ]
    for tensor, arg, layout, channels in ((offsets, "offsets", "2 * deformable_groups * kh * kw", 2 * taps),
                                          (mask, "mask", "deformable_groups * kh * kw", taps)):
        if tensor is not None:
            expected = tf.stack([n, out_h, out_w, channels])
            checks.append((~large_enough | tf.reduce_all(tf.equal(tf.shape(tensor), expected)),
                           f"deform_conv2d: {arg} must be [N, Ho, Wo, {layout}] = {{}}, got {{}}",
                           [expected, tf.shape(tensor)]))
    if bias is not None:
        checks.append((tf.reduce_all(tf.equal(tf.shape(bias), [cout])),
                       "deform_conv2d: bias must be [Cout] = [{}], got {}", [cout, tf.shape(bias)]))
    return [op for condition, template, values in checks
            for op in assert_that(condition, tf.strings.format(template, values))]


def deform_conv2d_composite(inputs, offsets, kernel, mask, bias, strides, padding, dilations, groups,
                            deformable_groups):
    """deform_conv2d from stock TF ops: gather-based bilinear im2col, then one matmul (einsum per group).

    Arguments as deform_conv2d (strides, padding, dilations as pairs; shapes already checked).
    """
    dtype = inputs.dtype
    kh, kw, _, cout = _dims(kernel)
    taps, dg = kh * kw, deformable_groups
    shape = tf.shape(inputs)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    out_h, out_w = tf.shape(offsets)[1], tf.shape(offsets)[2]
    # Regular grid of sampling positions [Ho, Wo, K].
    rows = tf.range(out_h)[:, None, None, None] * strides[0] - padding[0] + tf.range(kh)[:, None] * dilations[0]
    cols = tf.range(out_w)[None, :, None, None] * strides[1] - padding[1] + tf.range(kw) * dilations[1]
    base_y = tf.reshape(tf.broadcast_to(rows, [out_h, out_w, kh, kw]), [out_h, out_w, taps])
    base_x = tf.reshape(tf.broadcast_to(cols, [out_h, out_w, kh, kw]), [out_h, out_w, taps])
    # Sampling positions [N, dg, Ho * Wo * K].
    off = tf.reshape(offsets, [n, out_h, out_w, dg, taps, 2])
    y = tf.cast(base_y, dtype)[None, :, :, None, :] + off[..., 0]
    x = tf.cast(base_x, dtype)[None, :, :, None, :] + off[..., 1]
    y = tf.reshape(tf.transpose(y, [0, 3, 1, 2, 4]), [n, dg, -1])
    x = tf.reshape(tf.transpose(x, [0, 3, 1, 2, 4]), [n, dg, -1])
    image = tf.transpose(tf.reshape(inputs, [n, h * w, dg, c // dg]), [0, 2, 1, 3])  # [N, dg, H*W, C/dg]
    inside = (y > -1) & (y < tf.cast(h, dtype)) & (x > -1) & (x < tf.cast(w, dtype))  # False at NaN and +-inf
    nan_point = tf.math.is_nan(y) | tf.math.is_nan(x)
    # Points outside read 0 through `valid` below; moving them to 0 keeps NaN/inf out of the arithmetic
    # and of the gradients (which tf.where sends to the selected branch only).
    y, x = tf.where(inside, y, tf.zeros_like(y)), tf.where(inside, x, tf.zeros_like(x))
    y_low, x_low = tf.floor(y), tf.floor(x)
    ly, lx = y - y_low, x - x_low
    y_low, x_low = tf.cast(y_low, tf.int32), tf.cast(x_low, tf.int32)
    columns = 0.0
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y_low + dy, x_low + dx
        valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        index = tf.clip_by_value(yy, 0, h - 1) * w + tf.clip_by_value(xx, 0, w - 1)
        values = tf.gather(image, index, batch_dims=2)  # [N, dg, Ho*Wo*K, C/dg]
        # tf.where, not a product with `valid`: an invalid tap's pixel (or gradient) may be NaN or inf.
        columns += tf.where(valid[..., None], values * weight[..., None], tf.zeros_like(values))
    columns = tf.where(nan_point[..., None], tf.constant(float("nan"), dtype), columns)  # a NaN position reads NaN
    if mask is not None:
        m = tf.transpose(tf.reshape(mask, [n, out_h, out_w, dg, taps]), [0, 3, 1, 2, 4])
        columns *= tf.reshape(m, [n, dg, -1, 1])
    columns = tf.reshape(columns, [n, dg, out_h, out_w, taps, c // dg])
    columns = tf.reshape(tf.transpose(columns, [0, 2, 3, 4, 1, 5]), [-1, taps, c])  # [P, K, C]
    if groups == 1:
        out = tf.matmul(tf.reshape(columns, [-1, taps * c]), tf.reshape(kernel, [taps * c, cout]))
    else:
        cols = tf.reshape(columns, [-1, taps, groups, c // groups])
        weights = tf.reshape(kernel, [taps, c // groups, groups, cout // groups])
        out = tf.einsum("pkgc,kcgo->pgo", cols, weights)
    out = tf.reshape(out, [n, out_h, out_w, cout])
    return out if bias is None else out + bias


def _deform_conv2d_fused(inputs, offsets, kernel, mask, strides, padding, dilations, groups, deformable_groups):
    """Fused bilinear im2col (Tfdet>DeformIm2col) x kernel with tf.matmul (oneDNN / cuBLAS).

    The gradient recomputes the columns instead of keeping them alive between forward and backward
    (they are kh * kw times the size of the inputs) and scatters their gradient with Tfdet>DeformCol2im.
    """
    ops = loader.ops_module()
    attrs = dict(strides=list(strides), padding=list(padding), dilations=list(dilations), groups=groups,
                 deformable_groups=deformable_groups, modulated=mask is not None)
    mask_or_empty = tf.zeros([0], inputs.dtype) if mask is None else mask

    @tf.custom_gradient
    def run(inputs, offsets, mask_or_empty, kernel):
        kernel_size = tf.stack(_dims(kernel)[:2])  # a constant when the kernel's spatial size is static
        columns = ops.tfdet_deform_im2col(inputs, offsets, mask_or_empty, kernel_size, **attrs)

        def grad(grad_output):
            columns = ops.tfdet_deform_im2col(inputs, offsets, mask_or_empty, kernel_size, **attrs)
            grad_columns, grad_kernel = _columns_times_kernel_grad(columns, kernel, grad_output, groups)
            grad_inputs, grad_offsets, grad_mask = ops.tfdet_deform_col2im(inputs, offsets, mask_or_empty,
                                                                           kernel_size, grad_columns, **attrs)
            return grad_inputs, grad_offsets, grad_mask, grad_kernel

        return _columns_times_kernel(columns, kernel, groups), grad

    return run(inputs, offsets, mask_or_empty, kernel)


def _grouped(columns, kernel, groups):
    """columns [N, Ho, Wo, K*C] as [P, groups, K*C/groups]; kernel [kh, kw, C/groups, Cout] as
    [K*C/groups, groups, Cout/groups] (the fused columns' row layout is [groups, K, C/groups])."""
    kh, kw, cin_g, cout = _dims(kernel)
    return (tf.reshape(columns, [-1, groups, kh * kw * cin_g]),
            tf.reshape(kernel, [kh * kw * cin_g, groups, cout // groups]))


def _columns_times_kernel(columns, kernel, groups):
    shape = tf.shape(columns)
    cout = _dims(kernel)[3]
    cols, weights = _grouped(columns, kernel, groups)
    if groups == 1:
        out = tf.matmul(cols[:, 0], weights[:, 0])
    else:
        out = tf.einsum("pgk,kgo->pgo", cols, weights)
    return tf.reshape(out, tf.concat([shape[:3], [cout]], 0))


def _columns_times_kernel_grad(columns, kernel, grad_output, groups):
    """Gradients of _columns_times_kernel w.r.t. columns and kernel."""
    cols, weights = _grouped(columns, kernel, groups)
    grad = tf.reshape(grad_output, [-1, groups, _dims(kernel)[3] // groups])
    if groups == 1:
        grad_cols = tf.matmul(grad[:, 0], weights[:, 0], transpose_b=True)[:, None]
        grad_weights = tf.matmul(cols[:, 0], grad[:, 0], transpose_a=True)[:, None]
    else:
        grad_cols = tf.einsum("pgo,kgo->pgk", grad, weights)
        grad_weights = tf.einsum("pgk,pgo->kgo", cols, grad)
    return tf.reshape(grad_cols, tf.shape(columns)), tf.reshape(grad_weights, tf.shape(kernel))
