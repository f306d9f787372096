"""Guided Anchoring targets and anchors as pure functions (Wang et al., CVPR 2019; mmdetection's
GuidedAnchorHead, batched and padded).

Three kinds of boxes per feature location of a level with stride s:
  approxes: the 3 scales x 3 ratios anchors of AnchorGenerator(octave_base_scale=8, scales_per_octave=3)
            (RetinaNet: base 4), only used to find the shape targets;
  squares:  one square anchor of side octave_base_scale * s (AnchorGenerator(ratios=(1,), scales=(8,)));
  guided anchors: the squares with the predicted (dw, dh) applied (centre kept).

Location targets (ga_loc_targets): each valid gt goes to one level,
  level = clip(floor(log2(sqrt(w h) / (octave_base_scale * s_0)) + 0.5), 0, L - 1);
on that level, with the gt divided by the stride, the centre region (ratio 0.2 of the box around its
centre) is positive (target 1, weight 1), the ignore region (ratio 0.5) weight 0; the ignore region
is also applied on the adjacent levels l - 1 and l + 1; everything else is negative with weight 0.1.
A region of ratio r spans round((1 - r) / 2 * x1 + (1 + r) / 2 * x2 ...) feature cells inclusive
(mmdetection calc_region, clamped to [0, W] / [0, H]). One deviation: where a centre region of one gt
overlaps the ignore region of another gt of the same level, the centre wins here (mmdetection's result
there depends on the gt order).

Shape targets (approx_shape_targets): the IoU of a location with a gt is the best IoU of its 9
approxes (mmdetection ApproxMaxIoUAssigner), matched with the usual Max-IoU rules, then sampled.
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet import losses
from tfdet.ops import box_ops
from tfdet.ops.sampling import sample

# Guided anchors: dw, dh decoded with mmdetection's wh_ratio_clip=1e-6, i.e. |dw|, |dh| <= log(1e6).
ANCHOR_CLIP = 13.815510557964274


def assign_levels(gt_boxes, strides, octave_base_scale=8.0):
    """[B, G] int32 pyramid level (0-based) of each gt by its scale sqrt(w h) (see the module docstring)."""
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    wh = tf.maximum(gt_boxes[..., 2:] - gt_boxes[..., :2], 0.0)
    scale = tf.sqrt(wh[..., 0] * wh[..., 1])
    level = tf.floor(tf.math.log(tf.maximum(scale, 1e-6)) / tf.math.log(2.0)
                     - tf.math.log(float(octave_base_scale * strides[0])) / tf.math.log(2.0) + 0.5)
    return tf.cast(tf.clip_by_value(level, 0.0, float(len(strides) - 1)), tf.int32)


def region_mask(gt_boxes, ratio, stride, feature_size):
    """[B, G, H, W] bool: the cells of each gt's region of the given ratio on a level (calc_region).

    Args:
      gt_boxes: [B, G, 4] in input pixels. ratio: the region's side as a fraction of the box's.
      stride: the level's stride. feature_size: (H, W).
    """
    height, width = feature_size
    box = tf.cast(gt_boxes, tf.float32) / float(stride)
    edge = (1.0 - ratio) / 2.0
    lo = tf.round((1.0 - edge) * box[..., :2] + edge * box[..., 2:])  # x1, y1
    hi = tf.round(edge * box[..., :2] + (1.0 - edge) * box[..., 2:])  # x2, y2
    limit = tf.cast(tf.stack([width, height]), tf.float32)
    lo, hi = tf.clip_by_value(lo, 0.0, limit), tf.clip_by_value(hi, 0.0, limit)
    xs = tf.range(width, dtype=tf.float32)[None, None, None, :]
    ys = tf.range(height, dtype=tf.float32)[None, None, :, None]
    return ((xs >= lo[..., 0, None, None]) & (xs <= hi[..., 0, None, None])
            & (ys >= lo[..., 1, None, None]) & (ys <= hi[..., 1, None, None]))


class LocationTargets(NamedTuple):
    """targets, weights: lists of [B, H_l, W_l] float32; avg_factor: sum of B * H_l * W_l over levels / 200."""

    targets: list
    weights: list
    avg_factor: tf.Tensor


def ga_loc_targets(gt_boxes, gt_valid, feature_sizes, strides, octave_base_scale=8.0, center_ratio=0.2,
                   ignore_ratio=0.5, negative_weight=0.1):
    """Anchor location targets (mmdetection GuidedAnchorHead.ga_loc_targets).

    Args:
      gt_boxes: [B, G, 4]. gt_valid: [B, G] bool (False for padding).
      feature_sizes: one (H, W) per level (ints or scalar tensors). strides: one int per level (equal in x and y).
    Returns:
      LocationTargets.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"ga_loc_targets: {len(feature_sizes)} feature_sizes for {len(strides)} strides.")
    if not 0.0 < center_ratio <= ignore_ratio <= 1.0:
        raise ValueError(f"ga_loc_targets: need 0 < center_ratio <= ignore_ratio <= 1, got {center_ratio}, "
                         f"{ignore_ratio}.")
    gt_valid = tf.cast(gt_valid, tf.bool)
    levels = assign_levels(gt_boxes, strides, octave_base_scale)
    targets, weights, count = [], [], 0
    for level, (size, stride) in enumerate(zip(feature_sizes, strides)):
        here = (gt_valid & tf.equal(levels, level))[..., None, None]
        near = (gt_valid & tf.equal(tf.abs(levels - level), 1))[..., None, None]
        ignore = region_mask(gt_boxes, ignore_ratio, stride, size)
        centre = tf.reduce_any(region_mask(gt_boxes, center_ratio, stride, size) & here, axis=1)
        ignored = tf.reduce_any(ignore & (here | near), axis=1)
        targets.append(tf.cast(centre, tf.float32))
        weights.append(tf.where(centre, 1.0, tf.where(ignored, 0.0, negative_weight)))
        count += tf.cast(size[0] * size[1], tf.float32)
    batch = tf.cast(tf.shape(gt_boxes)[0], tf.float32)
    return LocationTargets(targets, weights, batch * count / 200.0)


def approx_iou(approxes, gt_boxes, location_valid, gt_valid):
    """[B, N, G] best IoU over the approxes of each location (mmdetection ApproxMaxIoUAssigner).

    Args:
      approxes: [N, A, 4] (AnchorGenerator output of one or all levels reshaped to A per location).
      gt_boxes: [B, G, 4]. location_valid: [B, N] bool. gt_valid: [B, G] bool.
    Returns:
      [B, N, G], exactly 0 for invalid locations or gts (as MaxIoUMatcher.match_iou expects).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    batch, num, per = tf.shape(gt_boxes)[0], tf.shape(approxes)[0], tf.shape(approxes)[1]
    flat = tf.broadcast_to(tf.reshape(tf.cast(approxes, tf.float32), [1, -1, 4]), [batch, num * per, 4])
    iou = box_ops.pairwise_iou(flat, tf.where(gt_valid[..., None], gt_boxes, 0.0))  # [B, N * A, G]
    iou = tf.reduce_max(tf.reshape(iou, [batch, num, per, -1]), axis=2)
    return tf.where(location_valid[..., None], iou, 0.0)


class ShapeTargets(NamedTuple):
    """gt_boxes [B, N, 4]: the matched gt of each location; weights [B, N]: 1 for sampled positives;
    avg_factor: sampled positives + negatives of the batch (>= 1; mmdetection's anchor_total_num)."""

    gt_boxes: tf.Tensor
    weights: tf.Tensor
    avg_factor: tf.Tensor


def approx_shape_targets(approxes, gt_boxes, gt_classes, location_valid, matcher, num_samples=256,
                         positive_fraction=0.5, seed=None):
    """Anchor shape targets: approximate Max-IoU matching of locations to gt, then random sampling.

    Args:
      approxes: [N, A, 4]. gt_boxes: [B, G, 4]; gt_classes: [B, G] (< 0 padding).
      location_valid: [B, N] bool. matcher: a MaxIoUMatcher (GA-RPN 0.7 / 0.3 / min 0.3; GA-RetinaNet
        0.5 / 0.4 / min 0.4). num_samples: per image, None for no sampling (all positives).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    location_valid = tf.cast(location_valid, tf.bool)
    gt_valid = tf.convert_to_tensor(gt_classes) >= 0
    batch = tf.shape(gt_boxes)[0]
    # One padding column keeps the reductions over G defined when there is no gt at all.
    gt_boxes = tf.concat([gt_boxes, tf.zeros([batch, 1, 4])], axis=1)
    gt_valid = tf.concat([gt_valid, tf.zeros([batch, 1], tf.bool)], axis=1)
    match = matcher.match_iou(approx_iou(approxes, gt_boxes, location_valid, gt_valid), location_valid, gt_valid)
    if num_samples is None:
        weights = tf.cast(tf.equal(match.labels, 1), tf.float32)
        total = tf.reduce_sum(weights)
    else:
        sampled = sample(match.labels, num_samples, positive_fraction, seed=seed)
        weights = tf.cast(sampled.mask & tf.equal(match.labels, 1), tf.float32)
        total = tf.reduce_sum(tf.cast(sampled.mask, tf.float32))
    targets = tf.gather(gt_boxes, tf.maximum(match.matched_gt, 0), batch_dims=1)
    return ShapeTargets(targets, weights, tf.maximum(total, 1.0))


def guided_anchors(shape_pred, squares, stds=(0.07, 0.07, 0.14, 0.14)):
    """Guided anchors: squares [N, 4] with predicted (dw, dh) [B, N, 2] applied (dx = dy = 0).

    The anchor coder is DeltaXYWH with means 0 and `stds` (GA-RPN (0.07, 0.07, 0.14, 0.14),
    GA-RetinaNet 1); |dw|, |dh| are clipped at log(1e6) as in mmdetection.
    """
    shape_pred = tf.cast(shape_pred, tf.float32)
    deltas = tf.concat([tf.zeros_like(shape_pred), shape_pred], axis=-1)
    return box_ops.decode_boxes(deltas, tf.cast(squares, tf.float32), stds=stds, clip_value=ANCHOR_CLIP)


def shape_loss(shape_pred, squares, targets, stds=(0.07, 0.07, 0.14, 0.14), beta=0.2):
    """Bounded-IoU loss of the guided anchors against their shape targets (weights, avg_factor from
    ShapeTargets), differentiable w.r.t. shape_pred [B, N, 2]."""
    anchors = guided_anchors(shape_pred, squares, stds)
    return losses.bounded_iou_loss(anchors, tf.stop_gradient(targets.gt_boxes), beta=beta,
                                   weights=targets.weights, avg_factor=targets.avg_factor)


def location_loss(loc_logits, targets, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss of the location maps (lists of [B, H, W] logits) against LocationTargets,
    summed over levels, each divided by the avg_factor."""
    total = 0.0
    for logits, target, weight in zip(loc_logits, targets.targets, targets.weights):
        total += losses.sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, weights=weight,
                                           avg_factor=targets.avg_factor)
    return total
