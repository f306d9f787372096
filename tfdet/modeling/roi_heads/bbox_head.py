"""Faster R-CNN box head: R-CNN target assignment, the 2-fc head, its losses and inference.

Label convention (mmdetection / detectron2): foreground classes are 0..C-1, the background class is
C; the classifier has C + 1 logits, the last one background. Regression deltas are normalized with
means 0 and stds (0.1, 0.1, 0.2, 0.2) (DeltaXYWHBBoxCoder); class-specific regression predicts 4
deltas per foreground class ([..., C * 4], class-major), class-agnostic 4.

Training (mmdetection faster_rcnn_r50_fpn 1x): the valid ground truth is appended to the proposals,
boxes are matched at IoU 0.5 / 0.5 without low-quality matches, 512 RoIs per image are sampled with
at most 25 % positives; cross-entropy over the sampled RoIs and L1 on the positives' deltas of their
class, both divided by the number of sampled RoIs. Inference: softmax scores, class-specific boxes
clipped to the image, score > 0.05, class-wise NMS at 0.5 (or Soft-NMS), the best 100 per image.
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.ops import box_ops, nms
from tfdet.ops.legacy import box_decoder, box_encoder
from tfdet.ops.matching import MaxIoUMatcher
from tfdet.ops.sampling import sample
from tfdet.modeling.conv_norm import build_conv_stack, conv_stack, norm_spec, run_conv_stack
from tfdet.modeling.registry import register_box_head

BBOX_STDS = (0.1, 0.1, 0.2, 0.2)
RCNN_MATCHER = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False)


@register_box_head("ConvFC")
@keras.saving.register_keras_serializable(package="tfdet")
class BBoxHead(keras.layers.Layer):
    """Box head (mmdetection ConvFCBBoxHead; torchvision TwoMLPHead / FastRCNNConvFCHead): `num_convs`
    3x3 convs (+ norm) + ReLU, flatten, `num_fcs` fcs + ReLU, then a classifier and a box regressor.

    The default is the shared 2-fc head of Faster R-CNN (num_convs=0, num_fcs=2, fc_dim 1024);
    torchvision's v2 / mmdetection's Shared4Conv1FC head is num_convs=4, num_fcs=1 with norm "bn" or
    "gn" (convs then drop their bias). Flattening is (H, W, C), tfdet's layout (a PyTorch checkpoint's
    first fc, which flattens (C, H, W), is permuted when converted).
    Call on pooled RoI features [B, K, S, S, C]; returns (cls_logits [B, K, num_classes + 1],
    deltas [B, K, 4 * num_classes] or [B, K, 4] when class_agnostic).
    Init as mmdetection: fcs Xavier-uniform, classifier normal(0, 0.01), regressor normal(0, 0.001).
    """

    def __init__(self, num_classes, fc_dim=1024, num_fcs=2, class_agnostic=False, num_convs=0, conv_dim=256,
                 norm=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.fc_dim, self.num_fcs = int(num_classes), int(fc_dim), int(num_fcs)
        self.num_convs, self.conv_dim, self.norm = int(num_convs), int(conv_dim), norm_spec(norm)
        self.class_agnostic = bool(class_agnostic)
        if self.num_classes < 1 or min(self.fc_dim, self.conv_dim) < 1 or min(self.num_fcs, self.num_convs) < 0:
            raise ValueError(f"BBoxHead: num_classes, fc_dim and conv_dim must be >= 1 and num_fcs, num_convs >= 0, "
                             f"got {num_classes}, {fc_dim}, {conv_dim}, {num_fcs}, {num_convs}.")
        self.convs, self.norms = conv_stack(self.num_convs, self.conv_dim, self.norm)
        self.fcs = [keras.layers.Dense(self.fc_dim, activation="relu", kernel_initializer="glorot_uniform",
                                       name=f"fc{i + 1}") for i in range(self.num_fcs)]
        self.cls = keras.layers.Dense(self.num_classes + 1, name="cls",
                                      kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.reg = keras.layers.Dense(4 if self.class_agnostic else 4 * self.num_classes, name="reg",
                                      kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        shape = build_conv_stack(self.convs, self.norms, (None, *input_shape[2:]))
        size = 1
        for dim in shape[1:]:
            size *= dim
        shape = (None, size)
        for fc in self.fcs:
            fc.build(shape)
            shape = (None, self.fc_dim)
        self.cls.build(shape)
        self.reg.build(shape)
        super().build(input_shape)

    def call(self, roi_features):
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [shape[0] * shape[1], *roi_features.shape[2:]])
        x = run_conv_stack(x, self.convs, self.norms)
        size = 1
        for dim in x.shape[1:]:
            size *= dim  # static: pooled size and channels
        x = tf.reshape(x, [-1, size])
        for fc in self.fcs:
            x = fc(x)
        cls_logits = tf.reshape(self.cls(x), [shape[0], shape[1], self.num_classes + 1])
        deltas = tf.reshape(self.reg(x), [shape[0], shape[1], -1])
        return cls_logits, deltas

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, fc_dim=self.fc_dim, num_fcs=self.num_fcs,
                      class_agnostic=self.class_agnostic, num_convs=self.num_convs, conv_dim=self.conv_dim,
                      norm=self.norm)
        return config


class RoiTargets(NamedTuple):
    """Sampled RoIs and their targets, all padded to [B, S] (S = num_samples), positives first.

    rois [B, S, 4] (zeros for padding); labels [B, S] int32: the class (0..C-1) of positives, C for
    negatives, -1 for padding; matched_gt [B, S] int32 index into the padded gt (-1 unless positive);
    box_targets [B, S, 4] normalized deltas (meaningful for positives only); is_positive, valid [B, S].
    """

    rois: tf.Tensor
    labels: tf.Tensor
    matched_gt: tf.Tensor
    box_targets: tf.Tensor
    is_positive: tf.Tensor
    valid: tf.Tensor


def sample_rois(proposals, proposal_valid, gt_boxes, gt_classes, num_classes, gt_is_crowd=None, add_gt=True,
                matcher=RCNN_MATCHER, num_samples=512, positive_fraction=0.25, stds=BBOX_STDS, seed=None,
                convention="current"):
    """R-CNN target assignment: (optionally) adds the ground truth to the proposals, matches, samples.

    Args:
      proposals: [B, P, 4]; proposal_valid: [B, P] bool.
      gt_boxes: [B, G, 4]; gt_classes: [B, G] int (< 0 padding); gt_is_crowd: optional [B, G] bool
        (crowd boxes are neither added nor matched).
      seed: optional [2] int for stateless sampling.
    Returns:
      RoiTargets (no gradient flows through it).
    """
    proposals = tf.cast(tf.stop_gradient(proposals), tf.float32)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    proposal_valid = tf.cast(proposal_valid, tf.bool)
    if add_gt:
        usable = gt_classes >= 0
        if gt_is_crowd is not None:
            usable &= ~tf.cast(gt_is_crowd, tf.bool)
        proposals = tf.concat([proposals, tf.where(usable[..., None], gt_boxes, 0.0)], axis=1)
        proposal_valid = tf.concat([proposal_valid, usable], axis=1)
    match = matcher(proposals, gt_boxes, gt_classes, gt_is_crowd=gt_is_crowd, box_valid=proposal_valid)
    sampled = sample(match.labels, num_samples, positive_fraction, seed=seed)
    index = tf.maximum(sampled.indices, 0)
    rois = tf.where(sampled.valid[..., None], tf.gather(proposals, index, batch_dims=1), 0.0)
    matched_gt = tf.where(sampled.is_positive, tf.gather(match.matched_gt, index, batch_dims=1), -1)
    gt_index = tf.maximum(matched_gt, 0)
    classes = tf.gather(gt_classes, gt_index, batch_dims=1)
    labels = tf.where(sampled.is_positive, classes, tf.where(sampled.valid, num_classes, -1))
    target_boxes = tf.gather(gt_boxes, gt_index, batch_dims=1)
    box_targets = box_encoder(convention)(target_boxes, rois, stds=stds)
    box_targets = tf.where(sampled.is_positive[..., None], box_targets, 0.0)
    return RoiTargets(rois=tf.stop_gradient(rois), labels=labels, matched_gt=matched_gt,
                      box_targets=tf.stop_gradient(box_targets), is_positive=sampled.is_positive,
                      valid=sampled.valid)


class Positives(NamedTuple):
    """The leading slots of RoiTargets that hold every sampled positive, for the mask and keypoint
    branches: rois [B, P, 4], matched_gt [B, P], labels [B, P] (0 where not positive), weights [B, P]
    float (1 for positives)."""

    rois: tf.Tensor
    matched_gt: tf.Tensor
    labels: tf.Tensor
    weights: tf.Tensor


def leading_positives(targets, num_samples, positive_fraction):
    """The first max(int(num_samples * positive_fraction), 1) sampled RoIs, where the sampler puts every
    positive (tfdet.ops.sampling)."""
    n = max(int(num_samples * positive_fraction), 1)
    positive = targets.is_positive[:, :n]
    return Positives(rois=targets.rois[:, :n], matched_gt=targets.matched_gt[:, :n],
                     labels=tf.where(positive, targets.labels[:, :n], 0), weights=tf.cast(positive, tf.float32))


def select_class_deltas(deltas, labels, num_classes):
    """[B, K, 4 * C] (or [B, K, 4]) -> [B, K, 4], the deltas of each RoI's class (class 0 for labels
    outside 0..C-1)."""
    if deltas.shape[-1] == 4:
        return deltas
    shape = tf.shape(deltas)
    per_class = tf.reshape(deltas, [shape[0], shape[1], num_classes, 4])
    index = tf.clip_by_value(tf.cast(labels, tf.int32), 0, num_classes - 1)
    return tf.gather(per_class, index, batch_dims=2)


def bbox_losses(cls_logits, deltas, targets, num_classes, loss_box="l1", beta=1.0):
    """R-CNN classification and box losses.

    Args:
      cls_logits: [B, S, C + 1]; deltas: [B, S, 4 * C] or [B, S, 4]; targets: RoiTargets.
      loss_box: "l1" (mmdetection v2) or "smooth_l1" with `beta` (Detectron's 1.0; detectron2 uses 0).
    Returns:
      {"rcnn_cls", "rcnn_box"}: sums over the batch divided by the number of sampled RoIs.
    """
    if loss_box not in ("l1", "smooth_l1"):
        raise ValueError(f"bbox_losses: loss_box must be 'l1' or 'smooth_l1', got {loss_box!r}.")
    num_sampled = tf.reduce_sum(tf.cast(targets.valid, tf.float32))
    labels = tf.where(targets.valid, targets.labels, -1)
    loss_cls = losses.cross_entropy(cls_logits, labels, avg_factor=num_sampled)
    pred = select_class_deltas(tf.cast(deltas, tf.float32), targets.labels, num_classes)
    loss_box = losses.smooth_l1_loss(pred, targets.box_targets, beta=beta if loss_box == "smooth_l1" else 0.0,
                                     weights=tf.cast(targets.is_positive, tf.float32), avg_factor=num_sampled)
    return {"rcnn_cls": loss_cls, "rcnn_box": loss_box}


def decode_class_boxes(deltas, rois, image_sizes, num_classes, stds=BBOX_STDS, clip_below=True,
                       convention="current"):
    """Per-class boxes [B, K, C, 4] (or [B, K, 1, 4] class-agnostic) decoded from the RoIs and clipped
    (clip_below: box_ops.decode_boxes'; convention: tfdet.ops.legacy.BOX_CONVENTIONS)."""
    deltas = tf.cast(deltas, tf.float32)
    shape = tf.shape(deltas)
    per = 1 if deltas.shape[-1] == 4 else num_classes
    flat = tf.reshape(deltas, [shape[0], -1, 4])
    anchors = tf.reshape(tf.repeat(tf.cast(rois, tf.float32), per, axis=1), [shape[0], -1, 4])
    boxes = box_decoder(convention, clip_below)(flat, anchors, stds=stds, max_shape=image_sizes)
    return tf.reshape(boxes, [shape[0], shape[1], per, 4])


def bbox_detections(cls_logits, deltas, rois, roi_valid, image_sizes, num_classes, stds=BBOX_STDS,
                    score_threshold=0.05, nms_iou=0.5, max_detections=100, nms_method="hard", soft_nms_sigma=0.5,
                    min_box_size=0.0, clip_below=True, convention="current"):
    """Detections from the box head on K RoIs per image.

    Args:
      cls_logits: [B, K, C + 1]; deltas: [B, K, 4C] or [B, K, 4]; rois: [B, K, 4]; roi_valid: [B, K].
      image_sizes: [B, 2] (height, width) for clipping.
      nms_method: "hard" (class-wise NMS at nms_iou), "linear" or "gaussian" (Soft-NMS, sigma).
      min_box_size: boxes with a side < min_box_size are dropped before NMS (torchvision: 1e-2; 0 keeps all).
      clip_below: the box coder clamps dw, dh from both sides (True) or from above only (torchvision).
      convention: the box coder's convention (tfdet.ops.legacy.BOX_CONVENTIONS; "legacy_v1": mmdetection 1.x).
    Returns:
      nms.Detections padded to max_detections (classes 0..C-1, -1 padding).
    """
    scores = tf.nn.softmax(tf.cast(cls_logits, tf.float32), axis=-1)[..., :num_classes]
    scores = tf.where(tf.cast(roi_valid, tf.bool)[..., None], scores, 0.0)
    boxes = decode_class_boxes(deltas, rois, image_sizes, num_classes, stds, clip_below=clip_below, convention=convention)
    if min_box_size > 0:
        scores = tf.where(box_ops.large_enough(boxes, min_box_size, inclusive=True), scores, 0.0)
    return nms.multiclass_nms(boxes, scores, max_detections, iou_threshold=nms_iou, score_threshold=score_threshold,
                              method=nms_method, sigma=soft_nms_sigma)
