"""Deformable RoI pooling (mmcv DeformRoIPool semantics, NHWC): fused kernel and composite twin."""

import tensorflow as tf

from tfdet.ops import loader
from tfdet.ops._inputs import pair, roi_inputs


def deform_roi_pool(features, boxes, box_indices, offsets=None, output_size=7, spatial_scale=1.0, sampling_ratio=0,
                    gamma=0.1, impl=None, name=None):
    """RoIAlign (half-pixel aligned) whose bins move by learned offsets.

    Bin (ph, pw) of box k averages the RoIAlign samples of that bin after moving it by
    (gamma * box_width * offsets[k, ph, pw, 0], gamma * box_height * offsets[k, ph, pw, 1]), box sizes
    measured on the feature map. offsets=None is plain aligned RoIAlign.

    Args:
      features: [N, H, W, C] float feature map.
      boxes: [K, 4] (x1, y1, x2, y2) in input-image pixels; `spatial_scale` maps them onto `features`.
      box_indices: [K] int32 in [0, N).
      offsets: None or [K, output_height, output_width, 2], (x, y) per bin, in units of the box size.
      output_size: int or (height, width).
      spatial_scale: features pixels per input pixel (1 / stride).
      sampling_ratio: samples per bin side; 0 takes ceil(box side / output side) per box.
      gamma: scale of the offsets.
      impl: None (fused when the op library is loaded), "fused" or "composite".

    Returns:
      [K, output_height, output_width, C], the dtype of `features`. Differentiable w.r.t. features and
      offsets.
    """
    out_h, out_w = pair(output_size, "deform_roi_pool", "output_size")
    if sampling_ratio < 0:
        raise ValueError(f"deform_roi_pool: sampling_ratio must be >= 0, got {sampling_ratio}.")
    impl = loader.resolve_impl(impl)
    with tf.name_scope(name or "deform_roi_pool"):
        features, boxes, box_indices, out_dtype = roi_inputs("deform_roi_pool", features, boxes, box_indices)
        compute = features.dtype
        if offsets is not None:
            offsets = tf.cast(offsets, compute)
            expected = [boxes.shape[0], out_h, out_w, 2]
            if offsets.shape.rank is not None and (
                    offsets.shape.rank != 4 or any(a is not None and b is not None and a != b
                                                   for a, b in zip(offsets.shape, expected))):
                raise ValueError(f"deform_roi_pool: offsets must be [K, {out_h}, {out_w}, 2], got shape "
                                 f"{offsets.shape}.")
        if impl == "fused":
            out = loader.ops_module().tfdet_deform_roi_pool(
                features, boxes, box_indices, tf.zeros([0], compute) if offsets is None else offsets,
                pooled_height=out_h, pooled_width=out_w, spatial_scale=float(spatial_scale),
                sampling_ratio=int(sampling_ratio), gamma=float(gamma), has_offsets=offsets is not None)
        else:
            out = _deform_roi_pool_composite(features, boxes, box_indices, offsets, out_h, out_w, float(spatial_scale),
                                             int(sampling_ratio), float(gamma))
        return tf.cast(out, out_dtype)


def _deform_roi_pool_composite(features, boxes, box_indices, offsets, out_h, out_w, spatial_scale, sampling_ratio,
                               gamma):
    """deform_roi_pool from stock TF ops: every bin is a small box for `crop_and_resize`.

    As in roi_align's composite twin, RoIAlign's clamped sampling is crop_and_resize on the map
    edge-padded by one pixel. The grid_h x grid_w samples of one (moved) bin are a crop of that size
    averaged; bins whose boxes have different adaptive grids are cropped in groups. crop_and_resize
    differentiates w.r.t. its boxes, which carries the gradient to the offsets.
    """
    dtype = features.dtype
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    num_rois = tf.shape(boxes)[0]
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    x1, y1, x2, y2 = tf.unstack(boxes * spatial_scale - 0.5, axis=-1)
    roi_w, roi_h = x2 - x1, y2 - y1
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    # Corners of every bin [K, out_h, out_w].
    bin_y = y1[:, None, None] + tf.cast(tf.range(out_h), dtype)[None, :, None] * bin_h[:, None, None]
    bin_x = x1[:, None, None] + tf.cast(tf.range(out_w), dtype)[None, None, :] * bin_w[:, None, None]
    bin_y += tf.zeros_like(bin_x)
    bin_x += tf.zeros_like(bin_y)
    if offsets is not None:
        bin_x += gamma * roi_w[:, None, None] * offsets[..., 0]
        bin_y += gamma * roi_h[:, None, None] * offsets[..., 1]
    bins = out_h * out_w
    bin_y, bin_x = tf.reshape(bin_y, [-1]), tf.reshape(bin_x, [-1])
    bin_hs, bin_ws = tf.repeat(bin_h, bins), tf.repeat(bin_w, bins)
    bin_images = tf.repeat(box_indices, bins)
    norm_h, norm_w = tf.cast(height + 1, dtype), tf.cast(width + 1, dtype)

    def pooled(grid_h, grid_w, select):
        """[len(select), C]: the means over the grid_h x grid_w samples of the bins at `select`."""
        y0, x0 = tf.gather(bin_y, select), tf.gather(bin_x, select)
        bh, bw = tf.gather(bin_hs, select), tf.gather(bin_ws, select)
        gh, gw = tf.cast(grid_h, dtype), tf.cast(grid_w, dtype)
        first_y, last_y = y0 + 0.5 * bh / gh, y0 + (gh - 0.5) * bh / gh
        first_x, last_x = x0 + 0.5 * bw / gw, x0 + (gw - 0.5) * bw / gw
        crop_boxes = tf.stack([(first_y + 1) / norm_h, (first_x + 1) / norm_w,
                               (last_y + 1) / norm_h, (last_x + 1) / norm_w], axis=-1)
        crops = tf.image.crop_and_resize(padded, tf.cast(crop_boxes, tf.float32), tf.gather(bin_images, select),
                                         tf.stack([grid_h, grid_w]), method="bilinear", extrapolation_value=0.0)
        return tf.reduce_mean(tf.cast(crops, dtype), axis=[1, 2])

    num_bins = num_rois * bins
    if sampling_ratio > 0:
        out = pooled(sampling_ratio, sampling_ratio, tf.range(num_bins))
    else:
        grid_h = tf.repeat(tf.cast(tf.math.ceil(roi_h / out_h), tf.int64), bins)
        grid_w = tf.repeat(tf.cast(tf.math.ceil(roi_w / out_w), tf.int64), bins)
        stride = tf.reduce_max(tf.concat([grid_w, [0]], 0)) + 1
        group = tf.maximum(grid_h, 0) * stride + tf.maximum(grid_w, 0)  # boxes with side <= 0 have grid 0
        groups, _ = tf.unique(group)
        out = tf.zeros(tf.stack([num_bins, channels]), dtype)

        def body(i, out):
            grid_h_i, grid_w_i = groups[i] // stride, groups[i] % stride
            select = tf.where(tf.equal(group, groups[i]))[:, 0]
            values = tf.cond(
                tf.logical_and(grid_h_i > 0, grid_w_i > 0),
                lambda: pooled(tf.cast(grid_h_i, tf.int32), tf.cast(grid_w_i, tf.int32), select),
                lambda: tf.zeros(tf.stack([tf.size(select), channels]), dtype))  # empty box: no samples
            return i + 1, tf.tensor_scatter_nd_update(out, select[:, None], values)

        _, out = tf.while_loop(lambda i, _: i < tf.size(groups), body, [tf.constant(0), out])
    return tf.reshape(out, tf.stack([num_rois, out_h, out_w, channels]))


@tf.RegisterGradient("Tfdet>DeformRoiPool")
def _deform_roi_pool_grad(op, grad):
    has_offsets = op.get_attr("has_offsets")
    grad_features, grad_offsets = loader.ops_module().tfdet_deform_roi_pool_grad(
        grad, op.inputs[0], op.inputs[1], op.inputs[2], op.inputs[3],
        spatial_scale=op.get_attr("spatial_scale"), sampling_ratio=op.get_attr("sampling_ratio"),
        gamma=op.get_attr("gamma"), has_offsets=has_offsets)
    return [grad_features, None, None, grad_offsets if has_offsets else None]
