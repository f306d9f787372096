"""Box math as pure, batched TF functions.

Conventions (docs/design.md, "Boxes"): boxes are `[..., 4]` float tensors `(x1, y1, x2, y2)` in absolute
pixels, width = x2 - x1 with no legacy +1. Every function broadcasts over leading batch dimensions.
Padding rows (all zeros) have zero area, so their IoU with anything is 0 and they never match.
"""

import math

import tensorflow as tf

# mmdetection's DeltaXYWHBBoxCoder wh_ratio_clip = 16 / 1000: |dw|, |dh| <= log(1000 / 16).
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)
_EPS = 1e-6  # mmdetection's bbox_overlaps eps: unions are clamped to it


def _boxes(boxes, name="boxes"):
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank is not None and (boxes.shape.rank == 0 or boxes.shape[-1] not in (None, 4)):
        raise ValueError(f"{name} must have shape [..., 4], got {boxes.shape}.")
    return boxes


def xyxy_to_xywh(boxes):
    """(x1, y1, x2, y2) -> (x1, y1, w, h) (COCO's layout)."""
    boxes = _boxes(boxes)
    return tf.concat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def xywh_to_xyxy(boxes):
    """(x1, y1, w, h) -> (x1, y1, x2, y2)."""
    boxes = _boxes(boxes)
    return tf.concat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_cxcywh(boxes):
    """(x1, y1, x2, y2) -> (centre x, centre y, w, h)."""
    boxes = _boxes(boxes)
    return tf.concat([(boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes):
    """(centre x, centre y, w, h) -> (x1, y1, x2, y2)."""
    boxes = _boxes(boxes)
    half = boxes[..., 2:] * 0.5
    return tf.concat([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def clip_boxes(boxes, image_size):
    """Clips x to [0, width] and y to [0, height].

    Args:
      boxes: [..., N, 4].
      image_size: (height, width) for all boxes, or a [..., 2] tensor of (height, width) per image
        whose leading dimensions match those of `boxes` before N (e.g. [B, 2] for [B, N, 4]).
    """
    boxes = _boxes(boxes)
    size = tf.cast(tf.convert_to_tensor(image_size), boxes.dtype)
    if size.shape.rank is not None and size.shape.rank > 1:
        size = size[..., None, :]  # broadcast over N
    height, width = size[..., 0], size[..., 1]
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    x1 = tf.minimum(tf.maximum(x1, 0.0), width)
    x2 = tf.minimum(tf.maximum(x2, 0.0), width)
    y1 = tf.minimum(tf.maximum(y1, 0.0), height)
    y2 = tf.minimum(tf.maximum(y2, 0.0), height)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def box_area(boxes):
    """Area (x2 - x1) * (y2 - y1) of [..., 4] boxes; negative sides count as zero."""
    boxes = _boxes(boxes)
    wh = tf.maximum(boxes[..., 2:] - boxes[..., :2], 0.0)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou(boxes1, boxes2, mode="iou"):
    """Pairwise overlaps between two sets of boxes, batched (mmdetection `bbox_overlaps`).

    Args:
      boxes1: [..., N, 4].
      boxes2: [..., M, 4], same leading dimensions as `boxes1`.
      mode: "iou" (intersection / union) or "iof" (intersection / area of boxes1, used to find
        boxes that lie inside crowd regions).

    Returns:
      [..., N, M]. The denominator is clamped to 1e-6, so padding rows (zero area) give 0.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"pairwise_iou: mode must be 'iou' or 'iof', got {mode!r}.")
    boxes1, boxes2 = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    boxes2 = tf.cast(boxes2, boxes1.dtype)
    # Coordinates as separate [..., N, 1] and [..., 1, M] tensors: every step is one broadcast pass
    # over [..., N, M] (slicing a trailing axis of 2 would be several times slower).
    ax1, ay1, ax2, ay2 = (c[..., :, None] for c in tf.unstack(boxes1, axis=-1))
    bx1, by1, bx2, by2 = (c[..., None, :] for c in tf.unstack(boxes2, axis=-1))
    inter_w = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    inter_h = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    inter = inter_w * inter_h
    area1 = tf.maximum(ax2 - ax1, 0.0) * tf.maximum(ay2 - ay1, 0.0)
    if mode == "iof":
        denom = area1
    else:
        area2 = tf.maximum(bx2 - bx1, 0.0) * tf.maximum(by2 - by1, 0.0)
        denom = area1 + area2 - inter
    return inter / tf.maximum(denom, _EPS)


def encode_boxes(boxes, anchors, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets (dx, dy, dw, dh) of `boxes` w.r.t. `anchors` (DeltaXYWHBBoxCoder.encode).

    dx = (gx - px) / pw, dy = (gy - py) / ph, dw = log(gw / pw), dh = log(gh / ph), then
    (delta - means) / stds. Centres and sizes have no +1. Degenerate sides (<= 0, e.g. padding rows)
    are clamped to a tiny positive value so targets stay finite (they must be masked by the caller).

    Args:
      boxes: [..., 4] target boxes.
      anchors: [..., 4] anchors or proposals, broadcastable to `boxes`.
    Returns:
      [..., 4] normalized deltas.
    """
    boxes, anchors = _boxes(boxes), _boxes(anchors, "anchors")
    anchors = tf.cast(anchors, boxes.dtype)
    tiny = tf.constant(1e-6, boxes.dtype)
    p = xyxy_to_cxcywh(anchors)
    g = xyxy_to_cxcywh(boxes)
    pwh = tf.maximum(p[..., 2:], tiny)
    gwh = tf.maximum(g[..., 2:], tiny)
    deltas = tf.concat([(g[..., :2] - p[..., :2]) / pwh, tf.math.log(gwh / pwh)], axis=-1)
    return (deltas - tf.constant(means, boxes.dtype)) / tf.constant(stds, boxes.dtype)


def decode_boxes(deltas, anchors, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0),
                 max_shape=None, clip_value=BBOX_XFORM_CLIP, clip_below=True):
    """Applies deltas to anchors (DeltaXYWHBBoxCoder.decode, mmdetection v2+; no +1 anywhere).

    deltas are de-normalized (delta * stds + means), dw and dh are clamped to [-clip_value,
    clip_value] (log(1000/16)), then gx = px + pw * dx, gw = pw * exp(dw), and the corners are
    gx -+ gw / 2.

    torchvision's BoxCoder(weights) is stds = 1 / weights (weights (10, 10, 5, 5) for the R-CNN box
    head, 1 for RPN and RetinaNet: the same up to float rounding) with clip_below=False: it clamps dw
    and dh from above only (BoxCoder.decode_single, bbox_xform_clip = log(1000/16)).

    Args:
      deltas: [..., 4] (dx, dy, dw, dh).
      anchors: [..., 4], broadcastable to `deltas`.
      max_shape: optional (height, width) or [..., 2] per image to clip the result to (see clip_boxes).
      clip_below: also clamp dw, dh at -clip_value (mmdetection); False clamps from above only.
    Returns:
      [..., 4] boxes.
    """
    deltas, anchors = _boxes(deltas, "deltas"), _boxes(anchors, "anchors")
    anchors = tf.cast(anchors, deltas.dtype)
    deltas = deltas * tf.constant(stds, deltas.dtype) + tf.constant(means, deltas.dtype)
    dxy = deltas[..., :2]
    dwh = (tf.clip_by_value(deltas[..., 2:], -clip_value, clip_value) if clip_below
           else tf.minimum(deltas[..., 2:], clip_value))
    p = xyxy_to_cxcywh(anchors)
    gxy = p[..., :2] + p[..., 2:] * dxy
    gwh = p[..., 2:] * tf.exp(dwh)
    boxes = tf.concat([gxy - 0.5 * gwh, gxy + 0.5 * gwh], axis=-1)
    if max_shape is not None:
        boxes = clip_boxes(boxes, max_shape)
    return boxes


def large_enough(boxes, min_size, inclusive=False):
    """[...] bool: both sides of each box larger than `min_size` (mmdetection), or at least
    `min_size` with inclusive=True (torchvision remove_small_boxes: RPN 1e-3, box head 1e-2)."""
    boxes = _boxes(boxes)
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = wh >= min_size if inclusive else wh > min_size
    return ok[..., 0] & ok[..., 1]
