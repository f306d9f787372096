"""Batched, padded non-maximum suppression: greedy NMS (per group or class-wise) and Soft-NMS.

Semantics (those of mmcv's nms, which TF's NMS kernels share; checked by the tests): a box is
suppressed by a kept box when their IoU is strictly greater than `iou_threshold`; only scores
strictly greater than `score_threshold` take part. TF's kernels read boxes as (y1, x1, y2, x2),
but IoU is symmetric in x and y, so our (x1, y1, x2, y2) boxes give the same result.

Soft-NMS (Bodla et al., 2017, Algorithm 1) instead decays the scores of the remaining boxes after
each selection: linear s *= (1 - IoU) when IoU >= iou_threshold, Gaussian s *= exp(-IoU^2 / sigma);
boxes whose score falls below `min_score` are dropped.

Outputs are padded to a static size: indices -1, boxes 0, scores 0, classes -1.
"""

from typing import NamedTuple

import tensorflow as tf

from tfdet.ops import box_ops

_METHODS = ("hard", "linear", "gaussian")


class NmsResult(NamedTuple):
    """indices: [B, K] int32 into N (-1 padding); boxes [B, K, 4]; scores [B, K]; valid [B, K] bool."""

    indices: tf.Tensor
    boxes: tf.Tensor
    scores: tf.Tensor
    valid: tf.Tensor


class Detections(NamedTuple):
    """boxes [B, K, 4]; scores [B, K]; classes [B, K] int32 (-1 padding); num_valid [B] int32.
    Valid detections come first, sorted by decreasing score."""

    boxes: tf.Tensor
    scores: tf.Tensor
    classes: tf.Tensor
    num_valid: tf.Tensor


def _check(boxes, scores, rank):
    if boxes.shape.rank is not None and (boxes.shape.rank != rank + 1 or boxes.shape[-1] != 4):
        raise ValueError(f"boxes must be [B, N, 4] here, got shape {boxes.shape}.")
    if scores.shape.rank is not None and scores.shape.rank != rank:
        raise ValueError(f"scores must have rank {rank}, got shape {scores.shape}.")


def batched_nms(boxes, scores, max_output_size, iou_threshold, score_threshold=float("-inf"), groups=None):
    """Greedy NMS per image; with `groups`, boxes of different groups never suppress each other.

    Args:
      boxes: [B, N, 4]. scores: [B, N].
      max_output_size: K, boxes kept per image (static).
      groups: optional [B, N] int (e.g. FPN level for RPN proposals, class for class-wise NMS);
        implemented by shifting each group to its own region of the plane (mmcv batched_nms).
    Returns:
      NmsResult, kept boxes in decreasing score order.
    """
    boxes, scores = tf.convert_to_tensor(boxes), tf.convert_to_tensor(scores)
    _check(boxes, scores, 2)
    shifted = boxes
    if groups is not None:
        lo = tf.reduce_min(boxes)
        span = tf.reduce_max(boxes) - lo + 1.0
        shifted = boxes - lo + tf.cast(groups, boxes.dtype)[..., None] * span
    nms_boxes = tf.cast(shifted, tf.float32)
    nms_scores = tf.cast(scores, tf.float32)

    def one(args):
        b, s = args
        return tuple(tf.raw_ops.NonMaxSuppressionV4(
            boxes=b, scores=s, max_output_size=max_output_size, iou_threshold=iou_threshold,
            score_threshold=score_threshold, pad_to_max_output_size=True))

    keep, num = tf.map_fn(one, (nms_boxes, nms_scores), fn_output_signature=(tf.int32, tf.int32))
    return _padded_result(boxes, scores, keep, tf.range(max_output_size)[None, :] < num[:, None])


def _padded_result(boxes, scores, keep, valid):
    keep = tf.where(valid, keep, -1)
    # Padding gathers an appended zero row (which also makes N == 0 work).
    batch, num = tf.shape(scores)[0], tf.shape(scores)[1]
    safe = tf.where(valid, keep, num)
    boxes = tf.concat([boxes, tf.zeros([batch, 1, 4], boxes.dtype)], axis=1)
    scores = tf.concat([scores, tf.zeros([batch, 1], scores.dtype)], axis=1)
    return NmsResult(indices=keep, boxes=tf.gather(boxes, safe, batch_dims=1),
                     scores=tf.gather(scores, safe, batch_dims=1), valid=valid)


def soft_nms(boxes, scores, max_output_size, method="linear", iou_threshold=0.3, sigma=0.5, min_score=1e-3,
             score_threshold=float("-inf")):
    """Soft-NMS per image (Bodla et al., Algorithm 1), padded; also runs greedy NMS with method="hard".

    Each step selects the highest remaining score, then rescales the others by f(IoU with it):
      "linear": 1 - IoU if IoU >= iou_threshold else 1;  "gaussian": exp(-IoU^2 / sigma);
      "hard": 0 if IoU > iou_threshold else 1.
    Boxes with score <= score_threshold, or below min_score (initially or after a decay), are dropped.

    Args:
      boxes: [B, N, 4]. scores: [B, N].
      max_output_size: K selections per image (static).
    Returns:
      NmsResult whose scores are the decayed scores at selection (non-increasing along K).
    """
    if method not in _METHODS:
        raise ValueError(f"soft_nms: method must be one of {_METHODS}, got {method!r}.")
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"soft_nms: sigma must be > 0, got {sigma}.")
    boxes, scores = tf.convert_to_tensor(boxes), tf.convert_to_tensor(scores)
    _check(boxes, scores, 2)
    dtype = scores.dtype
    neg_inf = tf.constant(float("-inf"), dtype)
    batch = tf.shape(scores)[0]
    current = tf.where((scores > score_threshold) & (scores >= min_score), scores, neg_inf)
    # Work on the live boxes only: each row sorted by score and cut to the largest live count, so
    # the loop costs K x (live boxes) rather than K x N (after a score threshold, few boxes live).
    num_live = tf.reduce_max(tf.reduce_sum(tf.cast(current > neg_inf, tf.int32), axis=1))
    current, order = tf.math.top_k(current, k=num_live)
    # One extra dead column keeps argmax defined when nothing lives; it is never selected.
    work_boxes = tf.concat([tf.gather(tf.cast(boxes, dtype), order, batch_dims=1), tf.zeros([batch, 1, 4], dtype)],
                           axis=1)
    current = tf.concat([current, tf.fill([batch, 1], neg_inf)], axis=1)
    order = tf.concat([order, tf.fill([batch, 1], -1)], axis=1)
    num_boxes = tf.shape(current)[1]

    def body(k, current, indices, kept):
        best = tf.argmax(current, axis=1, output_type=tf.int32)  # [B]
        best_score = tf.gather(current, best, batch_dims=1)
        ok = best_score > neg_inf
        best_box = tf.gather(work_boxes, best, batch_dims=1)
        iou = box_ops.pairwise_iou(best_box[:, None, :], work_boxes)[:, 0, :]  # [B, N]
        if method == "linear":
            weight = tf.where(iou >= iou_threshold, 1.0 - iou, 1.0)
        elif method == "gaussian":
            weight = tf.exp(-tf.square(iou) / sigma)
        else:
            weight = tf.where(iou > iou_threshold, 0.0, 1.0)
        alive = current > neg_inf
        decayed = tf.where(alive, current * weight, neg_inf)
        decayed = tf.where(decayed < min_score, neg_inf, decayed)
        decayed = tf.where(tf.equal(tf.range(num_boxes)[None, :], best[:, None]), neg_inf, decayed)
        current = tf.where(ok[:, None], decayed, current)
        indices = indices.write(k, tf.where(ok, best, -1))
        kept = kept.write(k, tf.where(ok, best_score, tf.zeros([], dtype)))
        return k + 1, current, indices, kept

    indices = tf.TensorArray(tf.int32, size=max_output_size)
    kept = tf.TensorArray(dtype, size=max_output_size)
    _, _, indices, kept = tf.while_loop(lambda k, *_: k < max_output_size, body,
                                        [tf.constant(0), current, indices, kept])
    indices = tf.transpose(tf.reshape(indices.stack(), [max_output_size, -1]))  # [B, K] into the live boxes
    indices = tf.where(indices >= 0, tf.gather(order, tf.maximum(indices, 0), batch_dims=1), -1)
    result = _padded_result(boxes, scores, indices, indices >= 0)
    kept_scores = tf.transpose(tf.reshape(kept.stack(), [max_output_size, -1]))
    return result._replace(scores=kept_scores)


def multiclass_nms(boxes, scores, max_total_size, iou_threshold=0.5, score_threshold=0.05, max_per_class=None,
                   method="hard", sigma=0.5, min_score=1e-3):
    """Class-wise NMS or Soft-NMS, then the best `max_total_size` detections per image.

    Args:
      boxes: [B, N, 4] (shared by all classes) or [B, N, C, 4] (class-specific regression).
      scores: [B, N, C] class scores, without a background column.
      max_total_size: K detections per image (static).
      max_per_class: detections kept per class before merging (default K).
      method: "hard" (tf.image.combined_non_max_suppression), "linear" or "gaussian" (Soft-NMS;
        iou_threshold is then the linear method's Nt, min_score the drop threshold).
    Returns:
      Detections.
    """
    if method not in _METHODS:
        raise ValueError(f"multiclass_nms: method must be one of {_METHODS}, got {method!r}.")
    boxes, scores = tf.convert_to_tensor(boxes), tf.convert_to_tensor(scores)
    if scores.shape.rank != 3:
        raise ValueError(f"multiclass_nms: scores must be [B, N, C], got shape {scores.shape}.")
    if boxes.shape.rank == 3:
        boxes = boxes[:, :, None, :]
    if boxes.shape.rank != 4 or boxes.shape[-1] != 4:
        raise ValueError(f"multiclass_nms: boxes must be [B, N, 4] or [B, N, C, 4], got shape {boxes.shape}.")
    max_per_class = max_per_class or max_total_size
    batch, num_classes = tf.shape(scores)[0], tf.shape(scores)[2]
    if method == "hard":
        out = tf.image.combined_non_max_suppression(
            tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32), max_per_class, max_total_size,
            iou_threshold=iou_threshold, score_threshold=score_threshold, pad_per_class=False, clip_boxes=False)
        valid = tf.range(max_total_size)[None, :] < out.valid_detections[:, None]
        classes = tf.where(valid, tf.cast(out.nmsed_classes, tf.int32), -1)
        return Detections(boxes=tf.cast(out.nmsed_boxes, boxes.dtype), scores=tf.cast(out.nmsed_scores, scores.dtype),
                          classes=classes, num_valid=out.valid_detections)
    # Soft-NMS: every (image, class) pair is one row of a batched soft_nms.
    class_boxes = tf.broadcast_to(boxes, tf.concat([tf.shape(scores), [4]], 0))
    rows_boxes = tf.reshape(tf.transpose(class_boxes, [0, 2, 1, 3]), [batch * num_classes, -1, 4])
    rows_scores = tf.reshape(tf.transpose(scores, [0, 2, 1]), [batch * num_classes, -1])
    kept = soft_nms(rows_boxes, rows_scores, max_per_class, method=method, iou_threshold=iou_threshold,
                    sigma=sigma, min_score=min_score, score_threshold=score_threshold)
    flat_scores = tf.reshape(tf.where(kept.valid, kept.scores, -1.0), [batch, -1])  # [B, C * K]
    flat_scores = tf.concat([flat_scores, -tf.ones([batch, max_total_size], flat_scores.dtype)], axis=1)
    flat_boxes = tf.reshape(kept.boxes, [batch, -1, 4])
    flat_boxes = tf.concat([flat_boxes, tf.zeros([batch, max_total_size, 4], flat_boxes.dtype)], axis=1)
    top_scores, top = tf.math.top_k(flat_scores, k=max_total_size)
    valid = top_scores >= 0
    classes = tf.where(valid, top // max_per_class, -1)
    return Detections(boxes=tf.where(valid[..., None], tf.gather(flat_boxes, top, batch_dims=1), 0.0),
                      scores=tf.where(valid, top_scores, 0.0), classes=classes,
                      num_valid=tf.reduce_sum(tf.cast(valid, tf.int32), axis=1))


class Candidates(NamedTuple):
    """anchors, classes [B, K] int32 (-1 padding); scores [B, K] (0 padding); valid [B, K] bool.
    Valid entries come first, by decreasing score."""

    anchors: tf.Tensor
    classes: tf.Tensor
    scores: tf.Tensor
    valid: tf.Tensor


def top_candidates(scores, k, score_threshold=float("-inf")):
    """The k best (anchor, class) pairs per image among those scoring above `score_threshold`, best first:
    the per-level selection of torchvision's RetinaNet (postprocess_detections: scores flattened over
    [anchors, classes], > score_thresh, top topk_candidates) and of mmdetection's dense heads
    (filter_scores_and_topk), where tfdet's retina_detections takes the k best anchors by their maximum
    class score.

    Args:
      scores: [B, N, C]. k: a Python int.
    Returns:
      Candidates, K = min(k, N * C) when N * C is static (else k).
    """
    scores = tf.convert_to_tensor(scores)
    if scores.shape.rank != 3:
        raise ValueError(f"top_candidates: scores must be [B, N, C], got shape {scores.shape}.")
    num_classes = scores.shape[2] or tf.shape(scores)[2]
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    count = flat.shape[1]
    k = min(int(k), count) if count is not None else tf.minimum(int(k), tf.shape(flat)[1])
    masked = tf.where(flat > score_threshold, flat, tf.constant(float("-inf"), flat.dtype))
    top, index = tf.math.top_k(masked, k=k)
    valid = top > float("-inf")
    return Candidates(anchors=tf.where(valid, index // num_classes, -1),
                      classes=tf.where(valid, index % num_classes, -1),
                      scores=tf.where(valid, top, tf.zeros_like(top)), valid=valid)
