"""RetinaNet head (Lin et al. 2017; mmdetection retinanet_r50_fpn_1x), its losses and inference.

Head, shared by the levels P3-P7: a class tower and a box tower of 4 x (3x3 conv 256 + ReLU; with
`norm`, 3x3 conv without bias + norm + ReLU: torchvision retinanet_resnet50_fpn_v2's GroupNorm(32)), then
a 3x3 conv to A * C class logits (bias -log((1 - 0.01) / 0.01), so every anchor starts at
probability 0.01) and a 3x3 conv to A * 4 deltas. All weights normal(0, 0.01).
Anchors: 9 per location (octave base scale 4, 3 scales per octave, ratios 0.5, 1, 2).
Training: Max-IoU matching 0.5 / 0.4 with low-quality matches (min IoU 0); sigmoid focal loss
(alpha 0.25, gamma 2) over the anchors that are not ignored and L1 on the positives' deltas (means 0,
stds 1), both divided by the number of positive anchors (at least 1).
Inference: per level the 1000 anchors with the highest class score, decoded and clipped, then
class-wise NMS at 0.5 over all levels, score > 0.05, the best 100.
The losses and detections also serve GA-RetinaNet (per-image guided anchors, masks, smooth L1, stds).
RetinaSpec binds the head and these functions to a `model.retina` config block (type "Retina", default).
"""

import math

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.modeling.conv_norm import make_norm, norm_spec
from tfdet.modeling.dense_heads.rpn import block_anchor_generator, block_anchors, block_matcher, feature_sizes
from tfdet.modeling.dense_heads.rpn import flatten_levels
from tfdet.modeling.registry import block_options, register_dense_head
from tfdet.ops import box_ops, nms
from tfdet.ops.legacy import box_decoder, box_encoder, check_convention
from tfdet.ops.matching import MaxIoUMatcher

RETINA_MATCHER = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True)
UNIT_STDS = (1.0, 1.0, 1.0, 1.0)


@keras.saving.register_keras_serializable(package="tfdet")
class RetinaHead(keras.layers.Layer):
    """Call on a list of [B, H_l, W_l, C_in] maps; returns (class logits, deltas), lists of
    [B, H_l, W_l, A * num_classes] and [B, H_l, W_l, A * 4] (anchor-major, as AnchorGenerator).
    norm: None, or a norm spec (tfdet.modeling.conv_norm) after each tower conv, whose bias then goes:
    layers `cls_conv<i>_norm`, `reg_conv<i>_norm`."""

    def __init__(self, num_classes, num_anchors=9, feat_channels=256, num_convs=4, prior_prob=0.01, norm=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.num_anchors = int(num_classes), int(num_anchors)
        self.feat_channels, self.num_convs, self.prior_prob = int(feat_channels), int(num_convs), float(prior_prob)
        self.norm = norm_spec(norm)
        init = keras.initializers.RandomNormal(stddev=0.01)

        def conv(filters, name, **kw):
            return keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name=name, **kw)

        def tower(prefix):
            if self.norm is None:
                return [conv(self.feat_channels, f"{prefix}{i}", activation="relu") for i in range(self.num_convs)], []
            return ([conv(self.feat_channels, f"{prefix}{i}", use_bias=False) for i in range(self.num_convs)],
                    [make_norm(self.norm, f"{prefix}{i}_norm") for i in range(self.num_convs)])

        self.cls_convs, self.cls_norms = tower("cls_conv")
        self.reg_convs, self.reg_norms = tower("reg_conv")
        bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        self.cls = conv(self.num_anchors * self.num_classes, "retina_cls",
                        bias_initializer=keras.initializers.Constant(bias))
        self.reg = conv(self.num_anchors * 4, "retina_reg")

    def build(self, input_shape):
        for tower, norms, last in ((self.cls_convs, self.cls_norms, self.cls),
                                   (self.reg_convs, self.reg_norms, self.reg)):
            shape = tuple(input_shape[0])
            for i, layer in enumerate(tower):
                layer.build(shape)
                shape = (*shape[:-1], self.feat_channels)
                if norms:
                    norms[i].build(shape)
            last.build(shape)
        super().build(input_shape)

    @staticmethod
    def _tower(x, convs, norms):
        for i, layer in enumerate(convs):
            x = tf.nn.relu(norms[i](layer(x))) if norms else layer(x)  # without norm the conv has the ReLU
        return x

    def call(self, features):
        cls_outputs, reg_outputs = [], []
        for feature in features:
            x = self._tower(feature, self.cls_convs, self.cls_norms)
            y = self._tower(feature, self.reg_convs, self.reg_norms)
            cls_outputs.append(self.cls(x))
            reg_outputs.append(self.reg(y))
        return cls_outputs, reg_outputs

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_anchors=self.num_anchors, feat_channels=self.feat_channels,
                      num_convs=self.num_convs, prior_prob=self.prior_prob, norm=self.norm)
        return config


def retina_losses(cls_logits, deltas, anchors, gt_boxes, gt_classes, num_classes, anchor_valid=None,
                  gt_is_crowd=None, matcher=RETINA_MATCHER, alpha=0.25, gamma=2.0, beta=0.0, stds=UNIT_STDS,
                  convention="current"):
    """Focal and box losses (RetinaNet; GA-RetinaNet on its guided anchors).

    Args:
      cls_logits: [B, N, C] (flatten_levels(..., C)); deltas: [B, N, 4].
      anchors: [N, 4], or [B, N, 4] per image (Guided Anchoring).
      gt_boxes: [B, G, 4]; gt_classes: [B, G] int (< 0 padding); anchor_valid: optional [B, N] bool.
      beta: smooth-L1 beta of the box loss (0: L1, RetinaNet; 0.04 GA-RetinaNet). stds: the box coder's.
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
    batched_anchors = anchors if anchors.shape.rank == 3 else anchors[None]
    box_targets = box_encoder(convention)(tf.gather(gt_boxes, gt_index, batch_dims=1), batched_anchors, stds=stds)
    loss_box = losses.smooth_l1_loss(deltas, tf.stop_gradient(box_targets), beta=beta,
                                     weights=tf.cast(positive, tf.float32), avg_factor=num_pos)
    return {"retina_cls": loss_cls, "retina_box": loss_box}


TOPK_MODES = ("anchor", "anchor_class")


def retina_detections(cls_outputs, reg_outputs, anchors, image_sizes, num_classes, pre_nms_top_k=1000,
                      score_threshold=0.05, nms_iou=0.5, max_detections=100, stds=UNIT_STDS, masks=None,
                      topk_mode="anchor", clip_below=True, min_size=None, convention="current"):
    """Detections from per-level head outputs: per level the pre_nms_top_k anchors with the best class
    score (topk_mode="anchor"), or the pre_nms_top_k best (anchor, class) pairs scoring above
    score_threshold (topk_mode="anchor_class", torchvision), decoded and clipped, then class-wise NMS over
    all levels. Returns nms.Detections padded to max_detections. clip_below: box_ops.decode_boxes'.
    min_size: None keeps every box; a number drops decoded boxes whose width or height is <= min_size
    (mmdetection's min_bbox_size, 0: empty boxes out). convention: the box coder's (tfdet.ops.legacy).

    Args:
      cls_outputs, reg_outputs: lists as RetinaHead returns ([B, H, W, A * C], [B, H, W, A * 4]).
      anchors: per level [N_l, 4], or [B, N_l, 4] per image (Guided Anchoring's guided anchors).
      masks: optional per level [B, N_l] bool; False anchors never become detections (Guided Anchoring's
        sparse anchors).
    """
    if topk_mode not in TOPK_MODES:
        raise ValueError(f"retina_detections: topk_mode must be one of {TOPK_MODES} (model.retina.topk_mode), "
                         f"got {topk_mode!r}.")
    decode = box_decoder(convention, clip_below)
    boxes, scores, labels = [], [], []
    for level, (logits, level_deltas, level_anchors) in enumerate(zip(cls_outputs, reg_outputs, anchors)):
        probs = tf.sigmoid(flatten_levels([tf.cast(logits, tf.float32)], num_classes))  # [B, N_l, C]
        if masks is not None:  # masked anchors score 0: they never pass score_threshold
            probs = tf.where(masks[level][..., None], probs, 0.0)
        level_deltas = flatten_levels([tf.cast(level_deltas, tf.float32)], 4)
        level_anchors = tf.cast(level_anchors, tf.float32)
        if topk_mode == "anchor_class":
            top, label, score, valid = nms.top_candidates(probs, pre_nms_top_k, score_threshold)
            top = tf.maximum(top, 0)  # padding (-1) reads anchor 0; its score is -inf below
            top_anchors = (tf.gather(level_anchors, top) if level_anchors.shape.rank == 2
                           else tf.gather(level_anchors, top, batch_dims=1))
            boxes.append(decode(tf.gather(level_deltas, top, batch_dims=1), top_anchors, stds=stds,
                                max_shape=image_sizes))
            scores.append(tf.where(valid & _big_enough(boxes[-1], min_size), score, float("-inf")))
            labels.append(label)
            continue
        count = probs.shape[1]
        k = min(pre_nms_top_k, count) if count is not None else tf.minimum(pre_nms_top_k, tf.shape(probs)[1])
        _, top = tf.math.top_k(tf.reduce_max(probs, axis=-1), k=k)
        top_anchors = (tf.gather(level_anchors, top) if level_anchors.shape.rank == 2
                       else tf.gather(level_anchors, top, batch_dims=1))
        boxes.append(decode(tf.gather(level_deltas, top, batch_dims=1), top_anchors, stds=stds, max_shape=image_sizes))
        scores.append(tf.where(_big_enough(boxes[-1], min_size)[..., None], tf.gather(probs, top, batch_dims=1),
                               -1.0))  # below any threshold
    if topk_mode == "anchor_class":
        labels = tf.concat(labels, 1)
        kept = nms.batched_nms(tf.concat(boxes, 1), tf.concat(scores, 1), max_detections, nms_iou, groups=labels)
        classes = tf.where(kept.valid, tf.gather(labels, tf.maximum(kept.indices, 0), batch_dims=1), -1)
        return nms.Detections(boxes=tf.where(kept.valid[..., None], kept.boxes, 0.0),
                              scores=tf.where(kept.valid, kept.scores, 0.0), classes=classes,
                              num_valid=tf.reduce_sum(tf.cast(kept.valid, tf.int32), axis=1))
    return nms.multiclass_nms(tf.concat(boxes, 1), tf.concat(scores, 1), max_detections, iou_threshold=nms_iou,
                              score_threshold=score_threshold)


def _big_enough(boxes, min_size):
    """[B, K] bool: every box when min_size is None, else width and height > min_size."""
    if min_size is None:
        return tf.ones(tf.shape(boxes)[:2], tf.bool)
    return box_ops.large_enough(boxes, float(min_size))


def detection_settings(block):
    """retina_detections' keyword arguments from a retina config block."""
    return dict(pre_nms_top_k=block.pre_nms_top_k, score_threshold=block.score_threshold, nms_iou=block.nms_iou,
                max_detections=block.max_detections, stds=block.box_stds)


def loss_settings(block):
    """retina_losses' keyword arguments (but the matcher) from a retina config block."""
    return dict(alpha=block.focal_alpha, gamma=block.focal_gamma, beta=block.smooth_l1_beta, stds=block.box_stds)


# RetinaNet's settings (mmdetection retinanet_r50_fpn_1x), shared by GA-RetinaNet.
RETINA_DEFAULTS = dict(levels=(3, 4, 5, 6, 7), feat_channels=256, num_convs=4, prior_prob=0.01, pos_iou=0.5,
                       neg_iou=0.4, min_pos_iou=0.0, focal_alpha=0.25, focal_gamma=2.0, smooth_l1_beta=0.0,
                       box_stds=UNIT_STDS, pre_nms_top_k=1000, score_threshold=0.05, nms_iou=0.5, max_detections=100)


@register_dense_head("Retina")
class RetinaSpec:
    """RetinaNet's head from a config block (`model.retina`, type "Retina"): its anchors and settings,
    bound to the pure functions above. GARetinaSpec (ga_retina_head.py) has the same interface:
      make_head(name, impl=None) -> keras layer (impl as model.ops_impl, for heads with a custom op)
      losses(outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None) -> {name: scalar}
      detections(outputs, image_sizes) -> nms.Detections
    """

    # torchvision's conventions, off by default: anchor_sizes / anchor_round / anchor_strides_from_image /
    # box_coder_clip_below as model.rpn's (RPNSpec); topk_mode "anchor_class": the pre_nms_top_k best
    # (anchor, class) pairs per level (retina_detections). min_size: None keeps every box; a number drops
    # boxes with a side <= min_size (mmdetection's min_bbox_size 0: empty boxes out). norm: the tower
    # convs' (RetinaHead), "gn" in torchvision's v2. box_convention as model.rpn's: "legacy_v1" =
    # mmdetection 1.x anchors and box coder.
    DEFAULTS = dict(type="Retina", **RETINA_DEFAULTS, octave_base_scale=4, scales_per_octave=3,
                    anchor_ratios=(0.5, 1.0, 2.0), anchor_sizes=None, anchor_round=False,
                    anchor_strides_from_image=False, box_coder_clip_below=True, topk_mode="anchor", min_size=None,
                    norm=None, box_convention="current")

    def __init__(self, block, num_classes):
        self.block = block = block_options(block, self.DEFAULTS, "model.retina")
        check_convention(block.box_convention, "model.retina.box_convention")
        box_decoder(block.box_convention, block.box_coder_clip_below)  # refuses a combination it cannot run
        self.num_classes = int(num_classes)
        self.anchor_generator = block_anchor_generator(block, octave_base_scale=block.octave_base_scale,
                                                       scales_per_octave=block.scales_per_octave)
        self.matcher = block_matcher(block)

    def anchors(self, sizes):
        """The anchors of feature maps of `sizes` ((H, W) per level)."""
        return block_anchors(self.anchor_generator, sizes, self.block.anchor_strides_from_image)

    def make_head(self, name="retina_head", impl=None):
        b = self.block
        return RetinaHead(self.num_classes, self.anchor_generator.num_anchors, b.feat_channels, b.num_convs,
                          b.prior_prob, norm=b.norm, name=name)

    def losses(self, outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None):
        cls_outputs, reg_outputs = outputs
        sizes = feature_sizes(cls_outputs)
        valid = tf.concat(self.anchor_generator.valid_flags(sizes, image_sizes), axis=1)
        return retina_losses(flatten_levels(cls_outputs, self.num_classes), flatten_levels(reg_outputs, 4),
                             tf.concat(self.anchors(sizes), 0), gt_boxes, gt_classes, self.num_classes,
                             anchor_valid=valid, gt_is_crowd=gt_is_crowd, matcher=self.matcher,
                             convention=self.block.box_convention, **loss_settings(self.block))

    def detections(self, outputs, image_sizes):
        cls_outputs, reg_outputs = outputs
        return retina_detections(cls_outputs, reg_outputs, self.anchors(feature_sizes(cls_outputs)),
                                 image_sizes, self.num_classes, topk_mode=self.block.topk_mode,
                                 clip_below=self.block.box_coder_clip_below, min_size=self.block.min_size,
                                 convention=self.block.box_convention,
                                 **detection_settings(self.block))
