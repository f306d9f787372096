"""Detection losses as pure functions (mmdetection's definitions and normalisation conventions).

Every loss computes an element-wise loss, multiplies it by `weights` (broadcastable to it; a
weight with one dimension less than the loss, e.g. [B, N] for [B, N, 4] deltas, gets a trailing
axis) and reduces it:
  reduction="none": the weighted element-wise loss;
  reduction="sum":  its sum;
  reduction="mean": its sum / (avg_factor + eps) when `avg_factor` is given (mmdetection's
                    convention: e.g. the number of positive anchors for focal loss, the number of
                    sampled boxes for RPN/R-CNN), else the mean over all elements.
Losses are computed in float32 at least (float16/bfloat16 inputs are upcast).
"""

import tensorflow as tf

_EPS = 1.1920928955078125e-07  # float32 machine epsilon, mmdetection's avg_factor guard
_REDUCTIONS = ("none", "sum", "mean")


def _float(x):
    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.float32, tf.float64):
        x = tf.cast(x, tf.float32)
    return x


def reduce_loss(loss, weights=None, avg_factor=None, reduction="mean"):
    """Weights and reduces an element-wise loss (see the module docstring)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if weights is not None:
        weights = tf.cast(weights, loss.dtype)
        if weights.shape.rank is not None and weights.shape.rank == loss.shape.rank - 1:
            weights = weights[..., None]
        loss = loss * weights
    if reduction == "none":
        return loss
    if reduction == "sum":
        return tf.reduce_sum(loss)
    if avg_factor is None:
        return tf.reduce_mean(loss)
    return tf.reduce_sum(loss) / (tf.cast(avg_factor, loss.dtype) + _EPS)


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, weights=None, avg_factor=None, reduction="mean"):
    """Focal loss on per-class sigmoids (Lin et al.; mmdetection py_sigmoid_focal_loss).

    loss = BCE(logits, t) * (alpha * t + (1 - alpha) * (1 - t)) * pt^gamma, pt = (1 - p) t + p (1 - t).

    Args:
      logits: [..., C]. targets: [..., C] in [0, 1] (one-hot of the class; all zeros for background).
      RetinaNet: weights = anchors not ignored, avg_factor = number of positive anchors (>= 1).
    """
    logits = _float(logits)
    targets = tf.cast(targets, logits.dtype)
    p = tf.sigmoid(logits)
    pt = (1.0 - p) * targets + p * (1.0 - targets)
    focal = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * tf.pow(pt, gamma)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits) * focal
    return reduce_loss(loss, weights, avg_factor, reduction)


def smooth_l1_loss(pred, target, beta=1.0, weights=None, avg_factor=None, reduction="mean"):
    """Smooth L1: 0.5 d^2 / beta where d = |pred - target| < beta, else d - 0.5 beta; beta = 0 is L1."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}.")
    pred = _float(pred)
    diff = tf.abs(pred - tf.cast(target, pred.dtype))
    if beta == 0:
        loss = diff
    else:
        loss = tf.where(diff < beta, 0.5 * tf.square(diff) / beta, diff - 0.5 * beta)
    return reduce_loss(loss, weights, avg_factor, reduction)


def l1_loss(pred, target, weights=None, avg_factor=None, reduction="mean"):
    """|pred - target| (mmdetection's RPN and R-CNN box loss since v2)."""
    return smooth_l1_loss(pred, target, beta=0.0, weights=weights, avg_factor=avg_factor, reduction=reduction)


def cross_entropy(logits, labels, weights=None, avg_factor=None, reduction="mean", ignore_index=-1):
    """Softmax cross-entropy over the last axis with integer labels.

    Elements labelled `ignore_index` contribute 0 and, for reduction="mean" without avg_factor,
    are left out of the count (mmdetection's avg_non_ignore=True).

    Args:
      logits: [..., C]. labels: [...] int in [0, C) or ignore_index. weights: [...].
    """
    logits = _float(logits)
    labels = tf.cast(labels, tf.int32)
    keep = tf.not_equal(labels, ignore_index)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, labels, 0), logits=logits)
    loss = tf.where(keep, loss, 0.0)
    if reduction == "mean" and avg_factor is None:
        count = tf.maximum(tf.reduce_sum(tf.cast(keep, loss.dtype)), 1.0)
        return tf.reduce_sum(reduce_loss(loss, weights, reduction="none")) / count
    return reduce_loss(loss, weights, avg_factor, reduction)


def binary_cross_entropy(logits, targets, weights=None, avg_factor=None, reduction="mean"):
    """Sigmoid cross-entropy with logits (RPN objectness), element-wise then reduced."""
    logits = _float(logits)
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets, logits.dtype), logits=logits)
    return reduce_loss(loss, weights, avg_factor, reduction)


def mask_cross_entropy(mask_logits, mask_targets, labels, weights=None):
    """Mask R-CNN mask loss: per-pixel sigmoid BCE on the channel of each RoI's class.

    Args:
      mask_logits: [K, H, W, C] (C = 1 for class-agnostic masks).
      mask_targets: [K, H, W] in [0, 1].
      labels: [K] int class of each RoI (ignored when C = 1).
      weights: optional [K], 0 for padding / negative RoIs.
    Returns:
      Scalar: mean over the pixels of the RoIs with non-zero weight (mmdetection: mean over all
      pixels of the positive RoIs); 0 when there is none.
    """
    mask_logits = _float(mask_logits)
    if mask_logits.shape.rank != 4:
        raise ValueError(f"mask_cross_entropy: mask_logits must be [K, H, W, C], got shape {mask_logits.shape}.")
    labels = tf.cast(labels, tf.int32)
    if mask_logits.shape[-1] == 1:
        labels = tf.zeros_like(labels)
    selected = tf.gather(mask_logits, tf.maximum(labels, 0), axis=3, batch_dims=1)  # [K, H, W]
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(mask_targets, selected.dtype), logits=selected)
    if weights is None:
        weights = tf.ones(tf.shape(labels)[:1], loss.dtype)
    weights = tf.cast(weights, loss.dtype)
    pixels = tf.cast(tf.shape(loss)[1] * tf.shape(loss)[2], loss.dtype)
    count = tf.reduce_sum(tf.cast(weights > 0, loss.dtype)) * pixels
    return tf.reduce_sum(loss * weights[:, None, None]) / tf.maximum(count, 1.0)


def bounded_iou_loss(pred, target, beta=0.2, eps=1e-3, weights=None, avg_factor=None, reduction="mean"):
    """Bounded IoU loss (Tychsen-Smith & Petersson 2018; mmdetection bounded_iou_loss), per coordinate.

    With centres (cx, cy), sizes (w, h) and the target treated as constant:
      l_x = 1 - max((tw - 2 |tcx - cx|) / (tw + 2 |tcx - cx| + eps), 0)   (l_y likewise)
      l_w = 1 - min(tw / (w + eps), w / (tw + eps))                         (l_h likewise)
    each then smoothed: 0.5 l^2 / beta where l < beta, else l - beta / 2.

    Args:
      pred, target: [..., 4] boxes (x1, y1, x2, y2). Returns (reduction="none") [..., 4].
    """
    pred = _float(pred)
    target = tf.stop_gradient(tf.cast(target, pred.dtype))
    p_ctr, p_wh = (pred[..., :2] + pred[..., 2:]) * 0.5, pred[..., 2:] - pred[..., :2]
    t_ctr, t_wh = (target[..., :2] + target[..., 2:]) * 0.5, target[..., 2:] - target[..., :2]
    d = 2.0 * tf.abs(t_ctr - p_ctr)
    loss_xy = 1.0 - tf.maximum((t_wh - d) / (t_wh + d + eps), 0.0)
    loss_wh = 1.0 - tf.minimum(t_wh / (p_wh + eps), p_wh / (t_wh + eps))
    loss = tf.concat([loss_xy, loss_wh], axis=-1)
    loss = tf.where(loss < beta, 0.5 * tf.square(loss) / beta, loss - 0.5 * beta)
    return reduce_loss(loss, weights, avg_factor, reduction)
