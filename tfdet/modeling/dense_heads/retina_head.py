"""RetinaNet head (Lin et al. 2017; mmdetection retinanet_r50_fpn_1x), its losses and inference.

Head, shared by the levels P3-P7: a class tower and a box tower of 4 x (3x3 conv 256 + ReLU), then
a 3x3 conv to A * C class logits (bias -log((1 - 0.01) / 0.01), so every anchor starts at
probability 0.01) and a 3x3 conv to A * 4 deltas. All weights normal(0, 0.01).
Anchors: 9 per location (octave base scale 4, 3 scales per octave, ratios 0.5, 1, 2).
Training: Max-IoU matching 0.5 / 0.4 with low-quality matches (min IoU 0); sigmoid focal loss
(alpha 0.25, gamma 2) over the anchors that are not ignored and L1 on the positives' deltas (means 0,
stds 1), both divided by the number of positive anchors (at least 1).
Inference: per level the 1000 anchors with the highest class score, decoded and clipped, then
class-wise NMS at 0.5 over all levels, score > 0.05, the best 100.
"""

import math

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.modeling.dense_heads.rpn import flatten_levels
from tfdet.ops import box_ops, nms
from tfdet.ops.matching import MaxIoUMatcher

RETINA_MATCHER = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True)


@keras.saving.register_keras_serializable(package="tfdet")
class RetinaHead(keras.layers.Layer):
    """Call on a list of [B, H_l, W_l, C_in] maps; returns (class logits, deltas), lists of
    [B, H_l, W_l, A * num_classes] and [B, H_l, W_l, A * 4] (anchor-major, as AnchorGenerator)."""

    def __init__(self, num_classes, num_anchors=9, feat_channels=256, num_convs=4, prior_prob=0.01, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.num_anchors = int(num_classes), int(num_anchors)
        self.feat_channels, self.num_convs, self.prior_prob = int(feat_channels), int(num_convs), float(prior_prob)
        init = keras.initializers.RandomNormal(stddev=0.01)

        def conv(filters, name, **kw):
            return keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name=name, **kw)

        self.cls_convs = [conv(self.feat_channels, f"cls_conv{i}", activation="relu") for i in range(self.num_convs)]
        self.reg_convs = [conv(self.feat_channels, f"reg_conv{i}", activation="relu") for i in range(self.num_convs)]
        bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        self.cls = conv(self.num_anchors * self.num_classes, "retina_cls",
                        bias_initializer=keras.initializers.Constant(bias))
        self.reg = conv(self.num_anchors * 4, "retina_reg")

    def build(self, input_shape):
        for tower, last in ((self.cls_convs, self.cls), (self.reg_convs, self.reg)):
            shape = tuple(input_shape[0])
            for layer in tower:
                layer.build(shape)
                shape = (*shape[:-1], self.feat_channels)
            last.build(shape)
        super().build(input_shape)

    def call(self, features):
        cls_outputs, reg_outputs = [], []
        for feature in features:
            x, y = feature, feature
            for layer in self.cls_convs:
                x = layer(x)
            for layer in self.reg_convs:
                y = layer(y)
            cls_outputs.append(self.cls(x))
            reg_outputs.append(self.reg(y))
        return cls_outputs, reg_outputs

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_anchors=self.num_anchors, feat_channels=self.feat_channels,
                      num_convs=self.num_convs, prior_prob=self.prior_prob)
        return config


def retina_losses(cls_logits, deltas, anchors, gt_boxes, gt_classes, num_classes, anchor_valid=None,
                  gt_is_crowd=None, matcher=RETINA_MATCHER, alpha=0.25, gamma=2.0):
    """Focal and box losses.

    Args:
      cls_logits: [B, N, C] (flatten_levels(..., C)); deltas: [B, N, 4]; anchors: [N, 4].
      gt_boxes: [B, G, 4]; gt_classes: [B, G] int (< 0 padding); anchor_valid: optional [B, N] bool.
    Returns:
      {"retina_cls", "retina_box"}, sums over the batch divided by max(1, number of positives).
    """
    cls_logits, deltas = tf.cast(cls_logits, tf.float32), tf.cast(deltas, tf.float32)
    gt_boxes, anchors = tf.cast(gt_boxes, tf.float32), tf.cast(anchors, tf.float32)
    match = matcher(anchors, gt_boxes, gt_classes, gt_is_crowd=gt_is_crowd, box_valid=anchor_valid)
    positive = tf.equal(match.labels, 1)
    gt_index = tf.maximum(match.matched_gt, 0)
    classes = tf.where(positive, tf.gather(tf.cast(gt_classes, tf.int32), gt_index, batch_dims=1), -1)
    targets = tf.one_hot(classes, num_classes)  # all zeros for negatives (and the -1 of ignored anchors)
    num_pos = tf.maximum(tf.reduce_sum(tf.cast(positive, tf.float32)), 1.0)
    loss_cls = losses.sigmoid_focal_loss(cls_logits, targets, alpha=alpha, gamma=gamma,
                                         weights=tf.cast(match.labels >= 0, tf.float32), avg_factor=num_pos)
    box_targets = box_ops.encode_boxes(tf.gather(gt_boxes, gt_index, batch_dims=1), anchors[None])
    loss_box = losses.l1_loss(deltas, tf.stop_gradient(box_targets), weights=tf.cast(positive, tf.float32),
                              avg_factor=num_pos)
    return {"retina_cls": loss_cls, "retina_box": loss_box}


def retina_detections(cls_outputs, reg_outputs, anchors, image_sizes, num_classes, pre_nms_top_k=1000,
                      score_threshold=0.05, nms_iou=0.5, max_detections=100):
    """Detections from per-level head outputs (lists as RetinaHead returns; anchors per level [N_l, 4]).
    Returns nms.Detections padded to max_detections."""
    boxes, scores = [], []
    for logits, level_deltas, level_anchors in zip(cls_outputs, reg_outputs, anchors):
        probs = tf.sigmoid(flatten_levels([tf.cast(logits, tf.float32)], num_classes))  # [B, N_l, C]
        level_deltas = flatten_levels([tf.cast(level_deltas, tf.float32)], 4)
        count = probs.shape[1]
        k = min(pre_nms_top_k, count) if count is not None else tf.minimum(pre_nms_top_k, tf.shape(probs)[1])
        _, top = tf.math.top_k(tf.reduce_max(probs, axis=-1), k=k)
        boxes.append(box_ops.decode_boxes(tf.gather(level_deltas, top, batch_dims=1),
                                          tf.gather(tf.cast(level_anchors, tf.float32), top), max_shape=image_sizes))
        scores.append(tf.gather(probs, top, batch_dims=1))
    return nms.multiclass_nms(tf.concat(boxes, 1), tf.concat(scores, 1), max_detections, iou_threshold=nms_iou,
                              score_threshold=score_threshold)
