"""Region Proposal Network on a feature pyramid (mmdetection v2 RPNHead).

The head is one 3x3 conv (+ ReLU) shared by all levels, then 1x1 convs giving one objectness
logit and 4 deltas per anchor. Losses and proposal generation are pure functions on the flat
layout [B, N, ...] with N = sum over levels of H * W * A (the order of AnchorGenerator).

Defaults (mmdetection faster_rcnn_r50_fpn): anchors strides (4, 8, 16, 32, 64), scale 8,
ratios (0.5, 1, 2); matching 0.7 / 0.3 with low-quality matches >= 0.3; 256 samples at 0.5;
sigmoid CE + L1 on deltas (means 0, stds 1), both divided by the number of sampled anchors;
proposals: top-k per level before NMS (2000 train / 1000 test), NMS 0.7 within each level,
the best 1000 after NMS (train and test, as mmdetection v2 and detectron2 FPN configs).
RPNSpec binds the head and these functions to a `model.rpn` config block (type "RPN", the default).
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.ops import box_ops, nms
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.legacy import LegacyAnchorGenerator, box_decoder, box_encoder, check_convention
from tfdet.ops.matching import MaxIoUMatcher
from tfdet.ops.sampling import sample
from tfdet.modeling.registry import block_options, register_proposal_head

RPN_MATCHER = MaxIoUMatcher(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True)


@keras.saving.register_keras_serializable(package="tfdet")
class RPNHead(keras.layers.Layer):
    """Shared RPN head. Call on a list of [B, H_l, W_l, C] maps; returns (objectness, deltas), lists of
    [B, H_l, W_l, A] logits and [B, H_l, W_l, A * 4] (dx, dy, dw, dh per anchor, anchor-major).
    `num_convs` 3x3 conv + ReLU layers come first (`rpn_conv`, `rpn_conv2`, ...; torchvision's v2 models: 2)."""

    def __init__(self, num_anchors=3, feat_channels=256, num_convs=1, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors, self.feat_channels, self.num_convs = int(num_anchors), int(feat_channels), int(num_convs)
        if self.num_convs < 1:
            raise ValueError(f"RPNHead: num_convs must be >= 1, got {num_convs}.")
        init = dict(kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), bias_initializer="zeros")
        self.conv = keras.layers.Conv2D(self.feat_channels, 3, padding="same", activation="relu", name="rpn_conv",
                                        **init)
        self.more_convs = [keras.layers.Conv2D(self.feat_channels, 3, padding="same", activation="relu",
                                               name=f"rpn_conv{i + 2}", **init) for i in range(self.num_convs - 1)]
        self.cls = keras.layers.Conv2D(self.num_anchors, 1, name="rpn_cls", **init)
        self.reg = keras.layers.Conv2D(self.num_anchors * 4, 1, name="rpn_reg", **init)

    def build(self, input_shape):
        shape = input_shape[0]
        self.conv.build(shape)
        inner = (*shape[:-1], self.feat_channels)
        for conv in self.more_convs:
            conv.build(inner)
        self.cls.build(inner)
        self.reg.build(inner)
        super().build(input_shape)

    def call(self, features):
        objectness, deltas = [], []
        for feature in features:
            x = self.conv(feature)
            for conv in self.more_convs:
                x = conv(x)
            objectness.append(self.cls(x))
            deltas.append(self.reg(x))
        return objectness, deltas

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors, feat_channels=self.feat_channels, num_convs=self.num_convs)
        return config


def feature_sizes(maps):
    """One (H, W) per [B, H, W, C] map: Python ints where the shape is static, scalar tensors otherwise."""
    return [tuple(m.shape[i] if m.shape[i] is not None else tf.shape(m)[i] for i in (1, 2)) for m in maps]


def block_matcher(block, match_low_quality=True):
    """A MaxIoUMatcher from a config block's pos_iou / neg_iou / min_pos_iou."""
    return MaxIoUMatcher(block.pos_iou, block.neg_iou, min_pos_iou=block.min_pos_iou,
                         match_low_quality=match_low_quality)


def block_anchor_generator(block, **scales):
    """The AnchorGenerator of a config block: anchor_sizes (absolute, per level) when set, else `scales`
    (scales= or octave_base_scale= / scales_per_octave=); anchor_round, anchor_strides_from_image; with
    box_convention "legacy_v1" mmdetection 1.x's anchors (LegacyAnchorGenerator, center_offset 0.5)."""
    sizes = None if block.anchor_sizes is None else [tuple(s) for s in block.anchor_sizes]
    if block.get("box_convention", "current") == "legacy_v1":
        if sizes or block.anchor_round or block.anchor_strides_from_image:
            raise ValueError("box_convention \"legacy_v1\" (mmdetection 1.x anchors) cannot be combined with "
                             "torchvision's anchor_sizes / anchor_round / anchor_strides_from_image; drop those.")
        return LegacyAnchorGenerator(strides=[2 ** lvl for lvl in block.levels], ratios=block.anchor_ratios,
                                     center_offset=0.5, **scales)
    return AnchorGenerator(strides=[2 ** lvl for lvl in block.levels], ratios=block.anchor_ratios,
                           **(dict(sizes=sizes) if sizes else scales), round_base=block.anchor_round,
                           strides_from_image=block.anchor_strides_from_image)


def block_anchors(generator, sizes, strides_from_image):
    """generator's anchors of feature maps of `sizes`; with strides_from_image the padded input size is read
    off the first level (feature size x stride: exact for inputs padded to a multiple of that stride)."""
    image_size = None
    if strides_from_image:
        stride = generator.strides[0]
        image_size = (sizes[0][0] * int(stride[1]), sizes[0][1] * int(stride[0]))
    return generator(sizes, image_size=image_size)


def flatten_levels(outputs, depth):
    """Concatenates per-level [B, H, W, A * depth] maps into [B, N, depth] (N = sum H * W * A)."""
    flat = [tf.reshape(o, [tf.shape(o)[0], -1, depth]) for o in outputs]
    return tf.concat(flat, axis=1)


def rpn_losses(objectness, deltas, anchors, gt_boxes, gt_classes, anchor_valid=None, gt_is_crowd=None,
               matcher=RPN_MATCHER, num_samples=256, positive_fraction=0.5, seed=None, stds=(1.0, 1.0, 1.0, 1.0),
               beta=0.0, convention="current"):
    """RPN objectness and box losses.

    Args:
      objectness: [B, N] logits (flatten_levels(..., 1)[..., 0]). deltas: [B, N, 4].
      anchors: [N, 4], or [B, N, 4] per image (Guided Anchoring).
      gt_boxes: [B, G, 4]; gt_classes: [B, G] (< 0 padding; any class is foreground).
      anchor_valid: optional [B, N] bool (AnchorGenerator.valid_flags / anchors_inside).
      seed: optional [2] int for stateless sampling.
      stds: the box coder's stds. beta: smooth-L1 beta of the box loss (0: L1, mmdetection v2 RPN).
      convention: the box convention (tfdet.ops.legacy.BOX_CONVENTIONS) of the regression targets.
    Returns:
      {"rpn_cls": scalar, "rpn_box": scalar}, each summed over the batch and divided by the number of
      sampled anchors in the batch.
    """
    # Losses are computed in float32 whatever the head's compute dtype (mixed precision).
    objectness, deltas = tf.cast(objectness, tf.float32), tf.cast(deltas, tf.float32)
    gt_boxes, anchors = tf.cast(gt_boxes, tf.float32), tf.cast(anchors, tf.float32)
    match = matcher(anchors, gt_boxes, gt_classes, gt_is_crowd=gt_is_crowd, box_valid=anchor_valid)
    sampled = sample(match.labels, num_samples, positive_fraction, seed=seed)
    weights = tf.cast(sampled.mask, tf.float32)
    positive = tf.cast(sampled.mask & tf.equal(match.labels, 1), tf.float32)
    num_sampled = tf.reduce_sum(weights)
    target_boxes = tf.gather(gt_boxes, tf.maximum(match.matched_gt, 0), batch_dims=1)
    batched_anchors = anchors if anchors.shape.rank == 3 else anchors[None]
    targets = tf.stop_gradient(box_encoder(convention)(target_boxes, batched_anchors, stds=stds))
    loss_cls = losses.binary_cross_entropy(objectness, positive, weights=weights, avg_factor=num_sampled)
    loss_box = losses.smooth_l1_loss(deltas, targets, beta=beta, weights=positive, avg_factor=num_sampled)
    return {"rpn_cls": loss_cls, "rpn_box": loss_box}


class Proposals(NamedTuple):
    """boxes [B, K, 4] float32 (zeros for padding); scores [B, K] objectness probabilities; valid [B, K]."""

    boxes: tf.Tensor
    scores: tf.Tensor
    valid: tf.Tensor


def rpn_proposals(objectness, deltas, anchors, image_sizes, pre_nms_top_k=1000, max_proposals=1000,
                  nms_iou=0.7, min_size=0.0, stds=(1.0, 1.0, 1.0, 1.0), masks=None, min_size_inclusive=False,
                  clip_below=True, convention="current"):
    """Proposals from per-level RPN outputs (mmdetection v2 RPNHead._get_bboxes, batched and padded).

    Per level: the pre_nms_top_k highest objectness anchors, decoded and clipped to the image; boxes
    with a side <= min_size are dropped; NMS at nms_iou within each level; the best max_proposals of
    all levels (sorted by score) are returned. No gradient flows into the proposals.

    Args:
      objectness: list of [B, H_l, W_l, A] logits. deltas: list of [B, H_l, W_l, A * 4].
      anchors: list of [H_l * W_l * A, 4] (AnchorGenerator output), or of [B, H_l * W_l * A, 4] per image
        (Guided Anchoring's guided anchors).
      image_sizes: [B, 2] (height, width) of each image, for clipping.
      stds: the box coder's stds (GA-RPN (0.07, 0.07, 0.11, 0.11)).
      masks: optional list of [B, H_l * W_l * A] bool; False anchors never become proposals (Guided
        Anchoring's sparse anchors: the location probability below its threshold).
      min_size_inclusive: keep boxes whose sides are >= min_size (torchvision remove_small_boxes) instead
        of > min_size.
      clip_below: the box coder clamps dw, dh from both sides (True) or from above only (torchvision).
      convention: the box coder's convention (tfdet.ops.legacy.BOX_CONVENTIONS; "legacy_v1": mmdetection 1.x).
    """
    decode = box_decoder(convention, clip_below)
    if not len(objectness) == len(deltas) == len(anchors):
        raise ValueError(f"rpn_proposals: got {len(objectness)} objectness, {len(deltas)} deltas and "
                         f"{len(anchors)} anchor levels.")
    if masks is not None and len(masks) != len(anchors):
        raise ValueError(f"rpn_proposals: got {len(masks)} masks for {len(anchors)} anchor levels.")
    boxes, scores, levels, kept_masks = [], [], [], []
    for level, (logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors)):
        logits = tf.reshape(tf.cast(tf.stop_gradient(logits), tf.float32), [tf.shape(logits)[0], -1])
        if masks is not None:  # masked anchors sort last
            logits = tf.where(masks[level], logits, tf.float32.min)
        level_deltas = tf.cast(tf.stop_gradient(level_deltas), tf.float32)
        level_deltas = tf.reshape(level_deltas, [tf.shape(level_deltas)[0], -1, 4])
        count = logits.shape[1]
        k = min(pre_nms_top_k, count) if count is not None else tf.minimum(pre_nms_top_k, tf.shape(logits)[1])
        top_logits, top = tf.math.top_k(logits, k=k)
        level_anchors = tf.cast(level_anchors, tf.float32)
        top_anchors = (tf.gather(level_anchors, top) if level_anchors.shape.rank == 2
                       else tf.gather(level_anchors, top, batch_dims=1))
        decoded = decode(tf.gather(level_deltas, top, batch_dims=1), top_anchors, stds=stds, max_shape=image_sizes)
        if masks is not None:
            kept_masks.append(tf.gather(masks[level], top, batch_dims=1))
        boxes.append(decoded)
        scores.append(tf.sigmoid(top_logits))
        levels.append(tf.fill(tf.shape(top), level))
    boxes, scores, levels = tf.concat(boxes, 1), tf.concat(scores, 1), tf.concat(levels, 1)
    big_enough = box_ops.large_enough(boxes, min_size, inclusive=min_size_inclusive)
    if masks is not None:
        big_enough &= tf.concat(kept_masks, 1)
    scores_for_nms = tf.where(big_enough, scores, float("-inf"))
    kept = nms.batched_nms(boxes, scores_for_nms, max_proposals, nms_iou, groups=levels)
    return Proposals(boxes=kept.boxes, scores=tf.where(kept.valid, kept.scores, 0.0), valid=kept.valid)


def proposal_settings(block, training):
    """rpn_proposals' keyword arguments from an rpn config block, for training or test."""
    phase = "train" if training else "test"
    return dict(pre_nms_top_k=block[f"pre_nms_top_k_{phase}"], max_proposals=block[f"max_proposals_{phase}"],
                nms_iou=block.nms_iou, min_size=block.min_size)


# The proposal settings shared by RPN and GA-RPN (mmdetection faster_rcnn_r50_fpn_1x).
PROPOSAL_DEFAULTS = dict(levels=(2, 3, 4, 5, 6), feat_channels=256, num_samples=256, positive_fraction=0.5,
                         pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3, nms_iou=0.7, min_size=0.0,
                         pre_nms_top_k_train=2000, max_proposals_train=1000, pre_nms_top_k_test=1000,
                         max_proposals_test=1000)


@register_proposal_head("RPN")
class RPNSpec:
    """The plain RPN of a config block (`model.rpn`, type "RPN"): its head, anchors and settings, bound to
    the pure functions above. Detectors only compose; GARPNSpec (ga_head.py) has the same interface:
      make_head(name, impl=None) -> keras layer (impl: custom-op implementation of heads with one, as
        model.ops_impl); outputs = head(maps)
      losses(outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None) -> {name: scalar}
      proposals(outputs, image_sizes, training=False) -> Proposals
    """

    # torchvision's conventions (tools/zoo_reference/torchvision_conventions.md 2.3-2.5), off by default:
    #   anchor_sizes               absolute anchor sizes per level (replace anchor_scales), e.g. ((32,), (64,), ...)
    #   anchor_round               base anchors rounded to whole pixels
    #   anchor_strides_from_image  a level's stride = padded input size // its feature size (the padded size is
    #                              read off the first level: feature size x stride; exact for inputs padded to a
    #                              multiple of that stride, as torchvision pads to 32)
    #   min_size_inclusive         keep proposals with sides >= min_size (not > min_size)
    #   box_coder_clip_below       False: dw, dh clamped from above only
    # box_convention "legacy_v1": mmdetection 1.x anchors and box coder (+1 widths; tfdet.ops.legacy), for 1.x
    # checkpoints; "current" (default) tfdet's = mmdetection 2.x / 3.x's.
    # num_convs: 3x3 convs of the head (torchvision v2: 2)
    DEFAULTS = dict(type="RPN", **PROPOSAL_DEFAULTS, anchor_scales=(8.0,), anchor_ratios=(0.5, 1.0, 2.0),
                    anchor_sizes=None, anchor_round=False, anchor_strides_from_image=False, min_size_inclusive=False,
                    box_coder_clip_below=True, num_convs=1, box_convention="current")

    def __init__(self, block):
        self.block = block = block_options(block, self.DEFAULTS, "model.rpn")
        check_convention(block.box_convention, "model.rpn.box_convention")
        box_decoder(block.box_convention, block.box_coder_clip_below)  # refuses a combination it cannot run
        self.anchor_generator = block_anchor_generator(block, scales=block.anchor_scales)
        self.matcher = block_matcher(block)

    def anchors(self, sizes):
        """The anchors of feature maps of `sizes` ((H, W) per level)."""
        return block_anchors(self.anchor_generator, sizes, self.block.anchor_strides_from_image)

    def make_head(self, name="rpn_head", impl=None):
        return RPNHead(self.anchor_generator.num_anchors, self.block.feat_channels, num_convs=self.block.num_convs,
                       name=name)

    def losses(self, outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None):
        objectness, deltas = outputs
        sizes = feature_sizes(objectness)
        valid = tf.concat(self.anchor_generator.valid_flags(sizes, image_sizes), axis=1)
        return rpn_losses(flatten_levels(objectness, 1)[..., 0], flatten_levels(deltas, 4),
                          tf.concat(self.anchors(sizes), 0), gt_boxes, gt_classes, anchor_valid=valid,
                          gt_is_crowd=gt_is_crowd, matcher=self.matcher, num_samples=self.block.num_samples,
                          positive_fraction=self.block.positive_fraction, convention=self.block.box_convention)

    def proposals(self, outputs, image_sizes, training=False):
        objectness, deltas = outputs
        return rpn_proposals(objectness, deltas, self.anchors(feature_sizes(objectness)), image_sizes,
                             min_size_inclusive=self.block.min_size_inclusive,
                             clip_below=self.block.box_coder_clip_below, convention=self.block.box_convention,
                             **proposal_settings(self.block, training))
