"""Deformable RoI pooling (mmcv DeformRoIPool semantics, NHWC): fused kernel and composite twin."""

import tensorflow as tf

from tfdet.ops import loader
from tfdet.ops._inputs import grid_checks, pair, roi_inputs, scaled_boxes
from tfdet.ops.roi_align import pool_grouped_by_grid


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

    Non-finite and absurd inputs (both impls alike):
      - A box that is not finite (a NaN or infinite corner after `spatial_scale`, or an infinite width or
        height) gives NaN in all its bins, as in roi_align.
      - A bin whose offset moves it to a NaN position (a NaN offset, or 0 * inf for an empty box) is NaN,
        as the bilinear arithmetic of mmcv's kernel makes it. A bin moved to +-infinity lies outside the
        map and is 0, as in mmcv. Either way the bin passes no gradient to the features or its offset.
      - Samples far outside the map read 0; the sampling grid is limited as in roi_align (at most
        max(64, ceil(4 * feature side / output side)) samples per bin side; beyond it
        InvalidArgumentError, before any work).
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
        corners, defined = scaled_boxes(boxes, float(spatial_scale), True)
        with tf.control_dependencies(grid_checks("deform_roi_pool", features, corners, out_h, out_w,
                                                 int(sampling_ratio), True)):
            features = tf.identity(features)
        if impl == "fused":
            out = loader.ops_module().tfdet_deform_roi_pool(
                features, boxes, box_indices, tf.zeros([0], compute) if offsets is None else offsets,
                pooled_height=out_h, pooled_width=out_w, spatial_scale=float(spatial_scale),
                sampling_ratio=int(sampling_ratio), gamma=float(gamma), has_offsets=offsets is not None)
        else:
            out = _deform_roi_pool_composite(features, corners, defined, box_indices, offsets, out_h, out_w,
                                             int(sampling_ratio), float(gamma))
        return tf.cast(out, out_dtype)


def _deform_roi_pool_composite(features, corners, defined, box_indices, offsets, out_h, out_w, sampling_ratio, gamma):
    """deform_roi_pool from stock TF ops: every bin is a small box for `crop_and_resize`.

    `corners` and `defined` come from scaled_boxes (aligned). As in roi_align's composite twin,
    RoIAlign's clamped sampling is crop_and_resize on the map edge-padded by one pixel. The
    grid_h x grid_w samples of one (moved) bin are a crop of that size averaged; bins whose boxes have
    different adaptive grids are cropped in groups. crop_and_resize differentiates w.r.t. its boxes,
    which carries the gradient to the offsets. Bins at a NaN or infinite position are cropped at a
    stand-in position and set to NaN or 0 at the end (crop_and_resize rejects non-finite boxes).
    """
    dtype = features.dtype
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    num_rois = tf.shape(corners)[0]
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    x1, y1, x2, y2 = corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]
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
    nan_bin = tf.math.is_nan(bin_y) | tf.math.is_nan(bin_x) | tf.repeat(tf.logical_not(defined), bins)
    finite_bin = tf.math.is_finite(bin_y) & tf.math.is_finite(bin_x) & tf.logical_not(nan_bin)
    bin_y, bin_x = tf.where(finite_bin, bin_y, 0.0), tf.where(finite_bin, bin_x, 0.0)
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
        out = pool_grouped_by_grid(pooled, tf.repeat(roi_h, bins), tf.repeat(roi_w, bins), out_h, out_w,
                                    tf.stack([num_bins, channels]), dtype)
    fill = tf.where(nan_bin, tf.constant(float("nan"), dtype), tf.constant(0.0, dtype))
    out = tf.where(finite_bin[:, None], out, fill[:, None])
    return tf.reshape(out, tf.stack([num_rois, out_h, out_w, channels]))


@tf.RegisterGradient("Tfdet>DeformRoiPool")
def _deform_roi_pool_grad(op, grad):
    has_offsets = op.get_attr("has_offsets")
    grad_features, grad_offsets = loader.ops_module().tfdet_deform_roi_pool_grad(
        grad, op.inputs[0], op.inputs[1], op.inputs[2], op.inputs[3],
        spatial_scale=op.get_attr("spatial_scale"), sampling_ratio=op.get_attr("sampling_ratio"),
        gamma=op.get_attr("gamma"), has_offsets=has_offsets)
    return [grad_features, None, None, grad_offsets if has_offsets else None]
