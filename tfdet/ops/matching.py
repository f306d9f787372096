"""Max-IoU matching of boxes (anchors or proposals) to padded ground truth (mmdetection MaxIoUAssigner).

For each box, with `max_iou` its best IoU over the valid ground truth and `argmax` that gt:
  1. negative (label 0) if 0 <= max_iou < neg_iou_thr (or lo <= max_iou < hi for a (lo, hi) pair);
  2. positive (label 1, matched to argmax) if max_iou >= pos_iou_thr;
  3. low-quality matches (match_low_quality): every gt whose best IoU over all boxes is
     >= min_pos_iou claims the box(es) reaching that IoU (all of them if gt_max_assign_all, else
     the first); when several gts claim one box, the gt with the highest index wins (mmdetection
     loops over gts in order and overwrites);
  4. everything else is ignored (label -1): IoUs between the thresholds, boxes flagged invalid
     (padding, outside the image), and boxes covered by crowd regions (IoF > ignore_iof_thr).
Ground truth with class < 0 is padding and matches nothing; crowd ground truth (is_crowd) is not
matched either, it only marks ignore regions. An image without valid gt has only negatives (and
ignored boxes).
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet.ops import box_ops


class MatchResult(NamedTuple):
    """Per-box matching result, all [B, N] (a NamedTuple, so tf.function can return it).

    labels: int32, 1 positive, 0 negative, -1 ignored.
    matched_gt: int32 index into the padded gt of each positive box, -1 elsewhere.
    max_iou: float, best IoU over valid gt (-1 for ignored/invalid boxes, 0 without gt).
    """

    labels: tf.Tensor
    matched_gt: tf.Tensor
    max_iou: tf.Tensor


class MaxIoUMatcher:
    """Configuration of Max-IoU matching; call it on padded batches.

    Presets (mmdetection configs): RPN MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3); R-CNN
    MaxIoUMatcher(0.5, 0.5, min_pos_iou=0.5, match_low_quality=False); RetinaNet
    MaxIoUMatcher(0.5, 0.4, min_pos_iou=0.0).
    """

    def __init__(self, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0, match_low_quality=True, gt_max_assign_all=True,
                 ignore_iof_thr=-1.0):
        if isinstance(neg_iou_thr, (tuple, list)):
            if len(neg_iou_thr) != 2 or neg_iou_thr[0] > neg_iou_thr[1]:
                raise ValueError(f"MaxIoUMatcher: neg_iou_thr must be a number or a (low, high) pair, "
                                 f"got {neg_iou_thr!r}.")
            self.neg_range = (float(neg_iou_thr[0]), float(neg_iou_thr[1]))
        else:
            self.neg_range = (0.0, float(neg_iou_thr))
        if self.neg_range[1] > pos_iou_thr:
            raise ValueError(f"MaxIoUMatcher: neg_iou_thr {neg_iou_thr} exceeds pos_iou_thr {pos_iou_thr}.")
        self.pos_iou_thr = float(pos_iou_thr)
        self.min_pos_iou = float(min_pos_iou)
        self.match_low_quality = bool(match_low_quality)
        self.gt_max_assign_all = bool(gt_max_assign_all)
        self.ignore_iof_thr = float(ignore_iof_thr)

    def __call__(self, boxes, gt_boxes, gt_classes, gt_is_crowd=None, box_valid=None):
        """Matches each box to the ground truth of its image.

        Args:
          boxes: [B, N, 4] anchors (or [N, 4] shared by the batch) or proposals.
          gt_boxes: [B, G, 4] padded ground truth.
          gt_classes: [B, G] int; < 0 marks padding.
          gt_is_crowd: optional [B, G] bool; crowd boxes are ignore regions, never matched.
          box_valid: optional [B, N] bool; False boxes are ignored (label -1) and take no part in
            low-quality matching.
        Returns:
          MatchResult.
        """
        gt_boxes = tf.convert_to_tensor(gt_boxes)
        boxes = tf.cast(tf.convert_to_tensor(boxes), gt_boxes.dtype)
        if gt_boxes.shape.rank != 3:
            raise ValueError(f"MaxIoUMatcher: gt_boxes must be [B, G, 4], got shape {gt_boxes.shape}.")
        batch = tf.shape(gt_boxes)[0]
        if boxes.shape.rank == 2:
            boxes = tf.broadcast_to(boxes[None], tf.concat([[batch], tf.shape(boxes)], 0))
        if boxes.shape.rank != 3:
            raise ValueError(f"MaxIoUMatcher: boxes must be [N, 4] or [B, N, 4], got shape {boxes.shape}.")
        gt_classes = tf.convert_to_tensor(gt_classes)
        if gt_classes.shape.rank != 2:
            raise ValueError(f"MaxIoUMatcher: gt_classes must be [B, G], got shape {gt_classes.shape}.")
        crowd = (tf.zeros_like(gt_classes, tf.bool) if gt_is_crowd is None
                 else tf.cast(gt_is_crowd, tf.bool))
        padding = gt_classes < 0
        valid_gt = ~padding & ~crowd  # [B, G]
        num_boxes = tf.shape(boxes)[1]
        box_valid = (tf.ones([batch, num_boxes], tf.bool) if box_valid is None
                     else tf.cast(box_valid, tf.bool))

        if self.ignore_iof_thr > 0:
            iof = box_ops.pairwise_iou(boxes, gt_boxes, mode="iof")  # [B, N, G]
            crowd_iof = tf.reduce_max(tf.where((crowd & ~padding)[:, None, :], iof, 0.0), axis=2)
            box_valid = box_valid & ~(crowd_iof > self.ignore_iof_thr)

        if gt_boxes.shape[1] is None or gt_boxes.shape[1] == 0:
            # One extra padding gt keeps the reductions over G defined when G == 0.
            gt_boxes = tf.concat([gt_boxes, tf.zeros([batch, 1, 4], gt_boxes.dtype)], axis=1)
            valid_gt = tf.concat([valid_gt, tf.zeros([batch, 1], tf.bool)], axis=1)
        # Unusable pairs get IoU exactly 0 by zeroing their boxes (zero area) rather than by masking
        # the [B, N, G] matrix; the [B, N] and [B, G] masks in match_iou then restore mmdetection's rules.
        zero = tf.zeros([], boxes.dtype)
        iou = box_ops.pairwise_iou(tf.where(box_valid[..., None], boxes, zero),
                                   tf.where(valid_gt[..., None], gt_boxes, zero))  # [B, N, G]
        return self.match_iou(iou, box_valid, valid_gt)

    def match_iou(self, iou, box_valid, valid_gt):
        """Matching from a precomputed overlap matrix (e.g. the approximate IoU of Guided Anchoring).

        Args:
          iou: [B, N, G] overlaps, exactly 0 for pairs with an invalid box or an invalid gt; G >= 1
            (append a padding column when there is no gt).
          box_valid: [B, N] bool. valid_gt: [B, G] bool (not padding, not crowd).
        Returns:
          MatchResult.
        """
        num_boxes = tf.shape(iou)[1]
        has_gt = tf.reduce_any(valid_gt, axis=1)[:, None]  # [B, 1]
        argmax = tf.argmax(iou, axis=2, output_type=tf.int32)  # [B, N]
        max_iou = tf.gather(iou, argmax, batch_dims=2)
        # No valid gt: every valid box has IoU 0 with "nothing" (mmdetection: all negative).
        max_iou = tf.where(box_valid, tf.where(has_gt, max_iou, 0.0), -1.0)

        low, high = self.neg_range
        negative = box_valid & (((max_iou >= low) & (max_iou < high)) | ~has_gt)
        positive = (max_iou >= self.pos_iou_thr) & box_valid & tf.gather(valid_gt, argmax, batch_dims=1)
        matched = tf.where(positive, argmax, -1)

        if self.match_low_quality:
            gt_max = tf.reduce_max(iou, axis=1)  # [B, G]; invalid boxes add IoUs of 0, which changes nothing
            claims_ok = valid_gt & (gt_max >= self.min_pos_iou)
            if self.gt_max_assign_all:
                target = tf.where(claims_ok, gt_max, 2.0)  # no IoU equals 2
                claims = tf.equal(iou, target[:, None, :])
            else:
                first = tf.argmax(tf.where(box_valid[..., None], iou, -1.0), axis=1, output_type=tf.int32)
                claims = tf.equal(tf.range(num_boxes)[None, :, None], tf.where(claims_ok, first, -1)[:, None, :])
            num_gt = tf.shape(iou)[2]
            winner = tf.reduce_max(tf.where(claims, tf.range(num_gt)[None, None, :], -1), axis=2)
            low_quality = (winner >= 0) & box_valid
            matched = tf.where(low_quality, winner, matched)
            positive = positive | low_quality

        labels = tf.where(positive, 1, tf.where(negative, 0, -1))
        return MatchResult(labels=labels, matched_gt=matched, max_iou=max_iou)
