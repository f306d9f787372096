"""RoIAlign (torchvision.ops.roi_align semantics, NHWC): fused kernel and composite stock-TF twin."""

import tensorflow as tf

from tfdet.ops import loader
from tfdet.ops._inputs import grid_checks, pair, roi_inputs, scaled_boxes

def roi_align(features, boxes, box_indices, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=True,
              impl=None, name=None):
    """Pools `output_size` bins from each box with bilinear sampling.

    Args:
      features: [N, H, W, C] float feature map (float16/bfloat16 are computed in float32).
      boxes: [K, 4] (x1, y1, x2, y2) in input-image pixels; `spatial_scale` maps them onto `features`.
      box_indices: [K] int32, the image of each box, in [0, N).
      output_size: int or (height, width) of the pooled output.
      spatial_scale: features pixels per input pixel (1 / stride).
      sampling_ratio: samples per bin side; 0 takes ceil(box side / output side) per box.
      aligned: True shifts box corners by -0.5 pixel (pixel centres at .5), as Detectron2 and mmdetection.
      impl: None (fused when the op library is loaded), "fused" or "composite".

    Returns:
      [K, output_height, output_width, C], the dtype of `features`. Differentiable w.r.t. `features`.

    Non-finite and absurd inputs (both impls alike):
      - A box with a NaN or infinite coordinate (after `spatial_scale`), or whose width or height on the
        feature map overflows to infinity, gives NaN in all its bins and passes no gradient to the
        features. (torchvision 0.29's CPU kernel crashes or fails on such boxes, so there is no
        convention to follow; NaN keeps a diverged box visible instead of silently pooling zeros.)
      - Samples at +-infinity or far outside the map (huge finite boxes) read 0, as any sample outside.
      - A bin has at most max(64, ceil(4 * feature side / output side)) samples per side. Every box up to
        4 times the feature map's size meets this with sampling_ratio=0, and every sampling_ratio <= 64
        does; a larger sampling_ratio, or a box whose adaptive grid exceeds it, raises
        InvalidArgumentError before any work.
      - NaN/inf feature values propagate through the bilinear arithmetic.
    """
    out_h, out_w = pair(output_size, "roi_align", "output_size")
    if sampling_ratio < 0:
        raise ValueError(f"roi_align: sampling_ratio must be >= 0, got {sampling_ratio}.")
    impl = loader.resolve_impl(impl)
    with tf.name_scope(name or "roi_align"):
        features, boxes, box_indices, out_dtype = roi_inputs("roi_align", features, boxes, box_indices)
        corners, defined = scaled_boxes(boxes, float(spatial_scale), bool(aligned))
        with tf.control_dependencies(grid_checks("roi_align", features, corners, out_h, out_w, int(sampling_ratio),
                                                 bool(aligned))):
            features = tf.identity(features)
        if impl == "fused":
            out = loader.ops_module().tfdet_roi_align(
                features, boxes, box_indices, pooled_height=out_h, pooled_width=out_w,
                spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio), aligned=bool(aligned))
        else:
            out = _roi_align_composite(features, corners, defined, box_indices, out_h, out_w, int(sampling_ratio),
                                       bool(aligned))
        return tf.cast(out, out_dtype)


def _roi_align_composite(features, corners, defined, box_indices, out_h, out_w, sampling_ratio, aligned):
    """RoIAlign from stock TF ops only (the SavedModel-export default and the test oracle's twin).

    `corners` and `defined` come from scaled_boxes: the boxes on the feature map, zeros where not defined
    (those boxes' bins are set to NaN at the end).

    torchvision's bilinear sampling clamps coordinates in [-1, 0] to the first row and those in
    [H-1, H] to the last, and drops samples beyond. That is exactly `crop_and_resize` (which drops
    samples outside the image) on the map edge-padded by one pixel. The samples of one box lie on a
    regular grid of (out_h * grid_h) x (out_w * grid_w) points, so one crop per box followed by a mean
    over each grid_h x grid_w block gives the bins. Boxes with different adaptive grids
    (sampling_ratio=0) are cropped in groups, one group per distinct (grid_h, grid_w).
    """
    dtype = features.dtype
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    x1, y1, x2, y2 = corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = tf.maximum(roi_w, 1.0), tf.maximum(roi_h, 1.0)
    num_rois = tf.shape(corners)[0]

    def pooled(grid_h, grid_w, select):
        """Bins of the boxes at positions `select`, all with the given grid."""
        steps_h = tf.cast(out_h * grid_h, dtype)
        steps_w = tf.cast(out_w * grid_w, dtype)
        ys = tf.gather(y1, select), tf.gather(roi_h, select) / steps_h
        xs = tf.gather(x1, select), tf.gather(roi_w, select) / steps_w
        # First and last sample (the step is divided first: no overflow for boxes near the float range).
        first_y, last_y = ys[0] + 0.5 * ys[1], ys[0] + (steps_h - 0.5) * ys[1]
        first_x, last_x = xs[0] + 0.5 * xs[1], xs[0] + (steps_w - 0.5) * xs[1]
        # Padded-map coordinates (+1), normalized by (padded size - 1) = size + 1.
        norm_h, norm_w = tf.cast(height + 1, dtype), tf.cast(width + 1, dtype)
        crop_boxes = tf.stack([(first_y + 1) / norm_h, (first_x + 1) / norm_w,
                               (last_y + 1) / norm_h, (last_x + 1) / norm_w], axis=-1)
        crops = tf.image.crop_and_resize(
            padded, tf.cast(crop_boxes, tf.float32), tf.gather(box_indices, select),
            tf.stack([out_h * grid_h, out_w * grid_w]), method="bilinear", extrapolation_value=0.0)
        crops = tf.reshape(tf.cast(crops, dtype), [-1, out_h, grid_h, out_w, grid_w, channels])
        return tf.reduce_mean(crops, axis=[2, 4])

    if sampling_ratio > 0:
        output = pooled(sampling_ratio, sampling_ratio, tf.range(num_rois))
    else:
        output = pool_grouped_by_grid(pooled, roi_h, roi_w, out_h, out_w, tf.stack([num_rois, out_h, out_w, channels]),
                                       dtype)
    return tf.where(defined[:, None, None, None], output, tf.constant(float("nan"), dtype))


def pool_grouped_by_grid(pooled, roi_h, roi_w, out_h, out_w, out_shape, dtype):
    """The adaptive-grid (sampling_ratio=0) result of shape `out_shape` = [num_rois * ..., ...]: one
    pooled(grid_h, grid_w, select) call per distinct adaptive grid ceil(roi / out), zeros for the items
    whose grid is empty (a side <= 0: no samples). roi_h and roi_w are per item (box or bin)."""
    grid_h = tf.cast(tf.math.ceil(roi_h / out_h), tf.int64)
    grid_w = tf.cast(tf.math.ceil(roi_w / out_w), tf.int64)
    stride = tf.reduce_max(tf.concat([grid_w, [0]], 0)) + 1
    group = tf.maximum(grid_h, 0) * stride + tf.maximum(grid_w, 0)  # items with side <= 0 have grid 0
    groups, _ = tf.unique(group)

    def body(i, output):
        grid_h_i, grid_w_i = groups[i] // stride, groups[i] % stride
        select = tf.where(tf.equal(group, groups[i]))[:, 0]
        values = tf.cond(
            tf.logical_and(grid_h_i > 0, grid_w_i > 0),
            lambda: pooled(tf.cast(grid_h_i, tf.int32), tf.cast(grid_w_i, tf.int32), select),
            lambda: tf.zeros(tf.concat([tf.shape(select, out_type=tf.int32), out_shape[1:]], 0), dtype))
        return i + 1, tf.tensor_scatter_nd_update(output, select[:, None], values)

    _, output = tf.while_loop(lambda i, _: i < tf.size(groups), body, [tf.constant(0), tf.zeros(out_shape, dtype)])
    return output


@tf.RegisterGradient("Tfdet>RoiAlign")
def _roi_align_grad(op, grad):
    grad_features = loader.ops_module().tfdet_roi_align_grad(
        grad, op.inputs[1], op.inputs[2], tf.shape(op.inputs[0], out_type=tf.int32),
        spatial_scale=op.get_attr("spatial_scale"), sampling_ratio=op.get_attr("sampling_ratio"),
        aligned=op.get_attr("aligned"))
    return [grad_features, None, None]


def fpn_levels(boxes, min_level, max_level, canonical_level=4, canonical_size=224.0):
    """FPN level of each box (FPN paper eq. 1): floor(canonical_level + log2(sqrt(area) / canonical_size)),
    clamped to [min_level, max_level]. boxes: [..., 4] (x1, y1, x2, y2). Returns int32 [...]."""
    boxes = tf.convert_to_tensor(boxes)
    area = tf.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), 0.0)
    scale = tf.sqrt(tf.cast(area, tf.float32))
    # The epsilon keeps exact powers of two (e.g. a 224x224 box) on their level despite rounding.
    level = tf.floor(canonical_level + tf.math.log(scale / canonical_size + 1e-6) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, min_level, max_level), tf.int32)
