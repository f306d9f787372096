"""CARAFE feature reassembly (mmcv.ops.carafe semantics, NHWC): fused kernel and composite stock-TF twin."""

import tensorflow as tf

from tfdet.ops import loader
from tfdet.ops._inputs import compute_dtype, floating


def _check_args(kernel_size, group_size, scale_factor):
    for name, value in (("kernel_size", kernel_size), ("group_size", group_size), ("scale_factor", scale_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"carafe: {name} must be a positive int, got {value!r}.")
    if kernel_size % 2 != 1:
        raise ValueError(f"carafe: kernel_size must be odd (the kernel is centred on a pixel), got {kernel_size}.")


def _static_checks(features, masks, kernel_size, group_size, scale_factor):
    """Raises ValueError for every mismatch visible in the static shapes."""
    if features.shape.rank is not None and features.shape.rank != 4:
        raise ValueError(f"carafe: features must have rank 4 [N, H, W, C], got shape {features.shape}.")
    if masks.shape.rank is not None and masks.shape.rank != 4:
        raise ValueError(f"carafe: masks must have rank 4 [N, H*s, W*s, G*k*k], got shape {masks.shape}.")
    if features.shape.rank is None or masks.shape.rank is None:
        return
    n, h, w, c = features.shape
    mn, mh, mw, mc = masks.shape
    mask_channels = group_size * kernel_size * kernel_size
    if mc is not None and mc != mask_channels:
        raise ValueError(f"carafe: masks must have group_size * kernel_size**2 = {group_size} * {kernel_size}**2 = "
                         f"{mask_channels} channels, got shape {masks.shape}.")
    if c is not None and c % group_size:
        raise ValueError(f"carafe: features channels ({c}) must be divisible by group_size ({group_size}).")
    for name, size, mask_size in (("height", h, mh), ("width", w, mw)):
        if size is not None and mask_size is not None and mask_size != size * scale_factor:
            raise ValueError(f"carafe: masks {name} ({mask_size}) must be scale_factor ({scale_factor}) times the "
                             f"features {name} ({size}); features {features.shape}, masks {masks.shape}.")
    if n is not None and mn is not None and n != mn:
        raise ValueError(f"carafe: features batch ({n}) and masks batch ({mn}) differ.")


def _dynamic_checks(features, masks, kernel_size, group_size, scale_factor):
    """Assertions for what the static shapes could not show (the fused kernel checks this itself)."""
    fs, ms = tf.shape(features), tf.shape(masks)
    return [
        tf.debugging.assert_equal(ms[3], group_size * kernel_size * kernel_size,
                                  message="carafe: masks must have group_size * kernel_size**2 channels"),
        tf.debugging.assert_equal(fs[3] % group_size, 0,
                                  message="carafe: features channels must be divisible by group_size"),
        tf.debugging.assert_equal(ms[1:3], fs[1:3] * scale_factor,
                                  message="carafe: masks spatial size must be scale_factor times the features'"),
        tf.debugging.assert_equal(ms[0], fs[0], message="carafe: features and masks batch sizes differ"),
    ]


def carafe(features, masks, kernel_size, group_size, scale_factor, impl=None, name=None):
    """Content-aware reassembly of features (CARAFE, Wang et al. ICCV 2019).

    output[n, y, x, c] = sum_{dy, dx < k} masks[n, y, x, g*k*k + dy*k + dx]
                                          * features[n, y//s + dy - r, x//s + dx - r, c]
    with k = kernel_size, r = (k - 1) // 2, s = scale_factor and g = c // (C // group_size) the channel
    group of c (groups are contiguous blocks of channels). Features outside the map count as zero. The
    masks are used as given: normalize them first (softmax over the k*k taps of each group), as
    `tfdet.layers.CARAFEUpsample` does.

    Non-finite values propagate through the arithmetic, with one rule (mmcv's, both impls): a tap that
    falls outside the map is skipped, so its mask value is never read (a NaN there does not reach the
    output, and its gradient is 0). No input selects memory, so nothing can crash or hang.

    Args:
      features: [N, H, W, C] float (float16/bfloat16 are computed in float32).
      masks: [N, H*s, W*s, group_size*k*k] reassembly kernels, same dtype as features.
      kernel_size: odd k (5 in the paper).
      group_size: number of channel groups G sharing one kernel; must divide C.
      scale_factor: integer upsampling factor s >= 1.
      impl: None (fused when the op library is loaded), "fused" or "composite".

    Returns:
      [N, H*s, W*s, C], the dtype of `features`. Differentiable w.r.t. features and masks.
    """
    _check_args(kernel_size, group_size, scale_factor)
    impl = loader.resolve_impl(impl)
    with tf.name_scope(name or "carafe"):
        features, masks = floating(features, "carafe", "features"), floating(masks, "carafe", "masks")
        _static_checks(features, masks, kernel_size, group_size, scale_factor)
        out_dtype = features.dtype
        compute = compute_dtype(out_dtype)
        features, masks = tf.cast(features, compute), tf.cast(masks, compute)
        if impl == "fused":
            out = loader.ops_module().tfdet_carafe(features, masks, kernel_size=kernel_size, group_size=group_size,
                                                   scale_factor=scale_factor)
        else:
            with tf.control_dependencies(_dynamic_checks(features, masks, kernel_size, group_size, scale_factor)):
                out = _carafe_composite(features, masks, kernel_size, group_size, scale_factor)
        return tf.cast(out, out_dtype)


def _carafe_composite(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE from stock TF ops only (the SavedModel-export default and the fused kernel's twin).

    With the output grid split as [N, H, s, W, s], tap (dy, dx) of all s x s output pixels of input
    cell (i, j) reads the zero-padded features at (i + dy, j + dx): one broadcast product per tap.
    Products are laid out [N, H, W, G, s*s, C/G] (at most three broadcast blocks, which TF supports),
    accumulated tap by tap so that the working set stays at the size of the output, and transposed to
    NHWC once at the end.
    """
    k, s = kernel_size, scale_factor
    r = (k - 1) // 2
    shape = tf.shape(features)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    cg = c // group_size
    padded = tf.pad(features, [[0, 0], [r, r], [r, r], [0, 0]])
    # masks [N, H*s, W*s, G*k*k] -> [N, H, W, G, k*k, s*s]
    kernels = tf.reshape(masks, tf.stack([n, h, s, w, s, group_size, k * k]))
    kernels = tf.reshape(tf.transpose(kernels, [0, 1, 3, 5, 6, 2, 4]), tf.stack([n, h, w, group_size, k * k, s * s]))
    out = None
    rows, cols = tf.range(h), tf.range(w)
    for tap in range(k * k):
        dy, dx = divmod(tap, k)
        shifted = tf.reshape(padded[:, dy:dy + h, dx:dx + w, :], tf.stack([n, h, w, group_size, 1, cg]))
        # A tap outside the map is skipped, its mask value unused (0 * NaN would be NaN), as in mmcv's kernel.
        on_map = (((rows + dy - r >= 0) & (rows + dy - r < h))[:, None]
                  & ((cols + dx - r >= 0) & (cols + dx - r < w))[None, :])
        weights = tf.where(on_map[None, :, :, None, None], kernels[:, :, :, :, tap, :], 0.0)
        term = weights[..., None] * shifted  # [N, H, W, G, s*s, C/G]
        out = term if out is None else out + term
    out = tf.transpose(tf.reshape(out, tf.stack([n, h, w, group_size, s, s, cg])), [0, 1, 4, 2, 5, 3, 6])
    return tf.reshape(out, tf.stack([n, h * s, w * s, c]))


@tf.RegisterGradient("Tfdet>Carafe")
def _carafe_grad(op, grad):
    grad_features, grad_masks = loader.ops_module().tfdet_carafe_grad(
        grad, op.inputs[0], op.inputs[1], kernel_size=op.get_attr("kernel_size"),
        group_size=op.get_attr("group_size"), scale_factor=op.get_attr("scale_factor"))
    return [grad_features, grad_masks]
