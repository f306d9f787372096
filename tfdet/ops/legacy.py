"""mmdetection 1.x box conventions, for checkpoints trained with mmdetection 1.x.

mmdetection 2.0 changed its coordinate system (its docs/en/compatibility.md, "Compatibility with
MMDetection 1.x"): a box (x1, y1, x2, y2) had width x2 - x1 + 1 (inclusive pixel indices) and anchors
were whole pixels centred on pixel centres. mmdetection 2.x and 3.x run 1.x checkpoints (converted by
tools/model_converters/upgrade_model_version.py) with the configs of configs/legacy_1.x, whose
LegacyAnchorGenerator and LegacyDeltaXYWHBBoxCoder these reproduce (RoIAlign there is aligned=False with
sampling_ratio=2: tfdet.ops.roi_align's options). tfdet's own convention (tfdet.ops.box_ops) is
unchanged by this module.
"""

import tensorflow as tf

from tfdet.ops import box_ops
from tfdet.ops.anchors import AnchorGenerator


class LegacyAnchorGenerator(AnchorGenerator):
    """AnchorGenerator with mmdetection 1.x base anchors (mmdet LegacyAnchorGenerator): with base size b,
    w = b * w_ratio * scale and h = b * h_ratio * scale as before, but the anchor is centred at
    center_offset * (b - 1) with corners centre -+ 0.5 * (w - 1) (and likewise in y), rounded to whole
    pixels (half to even). mmdetection's legacy configs use center_offset=0.5. The shifts over the
    feature map and the layout are AnchorGenerator's."""

    def base_anchors(self, level, dtype=tf.float32):
        size = tf.constant(self.base_sizes[level], dtype)
        center = self.center_offset * (size - 1.0)
        h_ratios = tf.sqrt(tf.constant(self.ratios, dtype))
        w_ratios = 1.0 / h_ratios
        scales = tf.constant(self.scales, dtype)
        half_w = 0.5 * (tf.reshape(size * w_ratios[:, None] * scales[None, :], [-1]) - 1.0)
        half_h = 0.5 * (tf.reshape(size * h_ratios[:, None] * scales[None, :], [-1]) - 1.0)
        return tf.round(tf.stack([center - half_w, center - half_h, center + half_w, center + half_h], axis=-1))


def _sizes(boxes):
    """(centre x, centre y, w + 1, h + 1) of [..., 4] boxes (mmdetection 1.x widths)."""
    return ((boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5,
            boxes[..., 2] - boxes[..., 0] + 1.0, boxes[..., 3] - boxes[..., 1] + 1.0)


def legacy_encode_boxes(boxes, anchors, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets with +1 widths (mmdet legacy_bbox2delta): dx = (gx - px) / pw with pw = x2 - x1 + 1,
    dw = log(gw / pw), ..., then (delta - means) / stds.

    Args:
      boxes: [..., 4] targets. anchors: [..., 4], broadcastable to `boxes`.
    """
    boxes = tf.convert_to_tensor(boxes)
    anchors = tf.cast(anchors, boxes.dtype)
    px, py, pw, ph = _sizes(anchors)
    gx, gy, gw, gh = _sizes(boxes)
    deltas = tf.stack([(gx - px) / pw, (gy - py) / ph, tf.math.log(gw / pw), tf.math.log(gh / ph)], axis=-1)
    return (deltas - tf.constant(means, boxes.dtype)) / tf.constant(stds, boxes.dtype)


def legacy_decode_boxes(deltas, anchors, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0), max_shape=None,
                        clip_value=box_ops.BBOX_XFORM_CLIP):
    """Applies deltas with +1 widths (mmdet legacy_delta2bbox, as mmdetection 2.x/3.x run 1.x models).

    deltas are de-normalized, dw and dh clamped to [-clip_value, clip_value]; pw = x2 - x1 + 1,
    gx = px + pw * dx, gw = pw * exp(dw), corners gx -+ gw / 2 (mmdetection 2.x dropped 1.x's -0.5 on the
    corners: its docstring reports ~0.5 box AP better for 1.x models), clipped to [0, W - 1] x [0, H - 1].
    So decoding legacy_encode_boxes' targets widens a box by half a pixel on each side, as in mmdetection.

    Args:
      deltas: [..., 4]. anchors: [..., 4], broadcastable to `deltas`.
      max_shape: optional (height, width) or [..., 2] per image, as box_ops.clip_boxes.
    """
    deltas = tf.convert_to_tensor(deltas)
    anchors = tf.cast(anchors, deltas.dtype)
    deltas = deltas * tf.constant(stds, deltas.dtype) + tf.constant(means, deltas.dtype)
    dwh = tf.clip_by_value(deltas[..., 2:], -clip_value, clip_value)
    px, py, pw, ph = _sizes(anchors)
    gx, gy = px + pw * deltas[..., 0], py + ph * deltas[..., 1]
    gw, gh = pw * tf.exp(dwh[..., 0]), ph * tf.exp(dwh[..., 1])
    boxes = tf.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], axis=-1)
    if max_shape is not None:
        boxes = box_ops.clip_boxes(boxes, tf.cast(tf.convert_to_tensor(max_shape), deltas.dtype) - 1.0)
    return boxes


# -- The switch: model.rpn / model.retina / model.roi box_convention ---------------------------------------------

BOX_CONVENTIONS = ("current", "legacy_v1")


def check_convention(convention, where="box_convention"):
    """`convention` if it is one of BOX_CONVENTIONS; a ValueError naming `where` otherwise."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"{where} must be one of {list(BOX_CONVENTIONS)} (\"legacy_v1\": mmdetection 1.x anchors and "
                         f"box coder, for 1.x checkpoints), got {convention!r}.")
    return convention


def box_encoder(convention="current"):
    """The regression-target function (boxes, anchors, means=, stds=) of a box convention."""
    return legacy_encode_boxes if check_convention(convention) == "legacy_v1" else box_ops.encode_boxes


def box_decoder(convention="current", clip_below=True):
    """The decoding function (deltas, anchors, means=, stds=, max_shape=) of a box convention; clip_below:
    box_ops.decode_boxes' (the legacy coder clamps dw, dh from both sides, as mmdetection)."""
    if check_convention(convention) == "current":
        return lambda *args, **kwargs: box_ops.decode_boxes(*args, clip_below=clip_below, **kwargs)
    if not clip_below:
        raise ValueError("box_coder_clip_below=False (torchvision) cannot be combined with box_convention "
                         "\"legacy_v1\" (mmdetection 1.x clamps dw, dh from both sides).")
    return legacy_decode_boxes
