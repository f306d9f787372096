"""Guided Anchoring heads: GA-RPN (mmdetection GARPNHead) and GA-RetinaNet (GARetinaHead).

Per level, from the head's features x:
  loc   = 1x1 conv(x) -> [B, H, W, 1] logit that an object centre lies here (sigmoid focal loss);
  shape = 1x1 conv(x) -> [B, H, W, 2] (dw, dh) of the one guided anchor of the location;
  x'    = ReLU(DeformConv3x3(x, offsets = 1x1 conv(stop_gradient(shape)))), 4 deformable groups;
  the box head (RPN objectness + deltas, or RetinaNet classes + deltas) runs on x'.
Anchors are the squares of tfdet.ops.guided_anchoring with the predicted shape; at inference only the
locations with sigmoid(loc) >= loc_threshold (0.01) give anchors, as a mask on static-shaped tensors
(training proposals use every location, as mmdetection). GAAnchors holds every guided anchoring
setting; GARPNSpec binds the head and these functions to a `model.rpn` config block of type "GARPN".

Defaults (mmdetection ga_rpn_r50_fpn / ga_faster_r50_fpn): strides (4, 8, 16, 32, 64), approxes
octave_base_scale 8 x 3 scales x ratios (0.5, 1, 2), squares of scale 8; anchor coder stds
(0.07, 0.07, 0.14, 0.14), box coder stds (0.07, 0.07, 0.11, 0.11); shape targets ApproxMaxIoU
0.7 / 0.3 (min 0.3) with 256 samples at 0.5; RPN targets MaxIoU 0.7 / 0.3 on the guided anchors, 256
samples, BCE + smooth L1 (beta 1).
"""

import keras
import tensorflow as tf

from tfdet.layers.deform_conv import DeformConv2D
from tfdet.modeling.dense_heads.rpn import PROPOSAL_DEFAULTS, RPN_MATCHER, block_matcher, feature_sizes, flatten_levels
from tfdet.modeling.dense_heads.rpn import proposal_settings, rpn_losses, rpn_proposals
from tfdet.modeling.registry import block_options, register_proposal_head
from tfdet.ops import guided_anchoring as ga
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.matching import MaxIoUMatcher

GA_RPN_SHAPE_MATCHER = MaxIoUMatcher(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3)
GA_RETINA_SHAPE_MATCHER = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.4)
ANCHOR_STDS = (0.07, 0.07, 0.14, 0.14)
GA_RPN_BOX_STDS = (0.07, 0.07, 0.11, 0.11)

# The guided anchoring settings of a config block (GA-RPN's; GA-RetinaNet overrides some), read by
# GAAnchors.from_block and the head.
GUIDED_DEFAULTS = dict(octave_base_scale=8, scales_per_octave=3, anchor_ratios=(0.5, 1.0, 2.0), anchor_stds=ANCHOR_STDS,
                       deformable_groups=4, loc_threshold=0.01, center_ratio=0.2, ignore_ratio=0.5,
                       loc_focal_alpha=0.25, loc_focal_gamma=2.0, loc_negative_weight=0.1, shape_beta=0.2,
                       shape_pos_iou=0.7, shape_neg_iou=0.3, shape_min_pos_iou=0.3, shape_samples=256,
                       shape_positive_fraction=0.5)


def _normal(std):
    return keras.initializers.RandomNormal(stddev=std)


@keras.saving.register_keras_serializable(package="tfdet")
class FeatureAdaption(keras.layers.Layer):
    """ReLU(DeformConv2D(x, offsets)) with offsets from a 1x1 conv of the gradient-stopped shape map
    (both without bias, as mmcv's DeformConv2d and mmdetection's conv_offset).

    Call: layer(x [B, H, W, C], shape [B, H, W, 2]) -> [B, H, W, filters]; C divisible by deformable_groups.
    impl: the deformable conv's implementation (None, "fused", "composite"; tfdet.ops.deform_conv2d).
    """

    def __init__(self, filters, kernel_size=3, deformable_groups=4, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.deformable_groups = int(filters), int(kernel_size), int(deformable_groups)
        self.impl = impl
        self.conv_offset = keras.layers.Conv2D(2 * self.deformable_groups * self.kernel_size ** 2, 1, use_bias=False,
                                               kernel_initializer=_normal(0.1), name="conv_offset")
        self.conv_adaption = DeformConv2D(self.filters, self.kernel_size, deformable_groups=self.deformable_groups,
                                          use_offset_conv=False, use_bias=False, kernel_initializer=_normal(0.01),
                                          impl=impl, name="conv_adaption")

    def build(self, inputs_shape, shape_shape=None):
        self.conv_offset.build((*inputs_shape[:-1], 2))
        self.conv_adaption.build(inputs_shape)
        self.built = True

    def call(self, inputs, shape):
        offsets = self.conv_offset(tf.stop_gradient(tf.cast(shape, inputs.dtype)))
        return tf.nn.relu(self.conv_adaption(inputs, offsets))

    def compute_output_shape(self, inputs_shape, shape_shape=None):
        return (*inputs_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, deformable_groups=self.deformable_groups,
                      impl=self.impl)
        return config


@keras.saving.register_keras_serializable(package="tfdet")
class GARPNHead(keras.layers.Layer):
    """GA-RPN head shared by all levels. Call on a list of [B, H_l, W_l, C] maps; returns a dict of lists
    (one per level): "loc" [B, H, W, 1], "shape" [B, H, W, 2], "objectness" [B, H, W, 1], "deltas"
    [B, H, W, 4]. impl: the feature adaption's deformable conv implementation."""

    def __init__(self, feat_channels=256, deformable_groups=4, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.feat_channels, self.deformable_groups, self.impl = int(feat_channels), int(deformable_groups), impl
        prior = float(-tf.math.log((1 - 0.01) / 0.01))
        self.conv = keras.layers.Conv2D(self.feat_channels, 3, padding="same", activation="relu",
                                        kernel_initializer=_normal(0.01), name="rpn_conv")
        self.conv_loc = keras.layers.Conv2D(1, 1, kernel_initializer=_normal(0.01),
                                            bias_initializer=keras.initializers.Constant(prior), name="conv_loc")
        self.conv_shape = keras.layers.Conv2D(2, 1, kernel_initializer=_normal(0.01), name="conv_shape")
        self.adaption = FeatureAdaption(self.feat_channels, 3, self.deformable_groups, impl=impl,
                                        name="feature_adaption")
        self.cls = keras.layers.Conv2D(1, 1, kernel_initializer=_normal(0.01), name="conv_cls")
        self.reg = keras.layers.Conv2D(4, 1, kernel_initializer=_normal(0.01), name="conv_reg")

    def build(self, input_shape):
        shape = input_shape[0]
        self.conv.build(shape)
        inner = (*shape[:-1], self.feat_channels)
        for layer in (self.conv_loc, self.conv_shape, self.adaption, self.cls, self.reg):
            layer.build(inner)
        super().build(input_shape)

    def call(self, features):
        out = {"loc": [], "shape": [], "objectness": [], "deltas": []}
        for feature in features:
            x = self.conv(feature)
            shape = self.conv_shape(x)
            out["loc"].append(self.conv_loc(x))
            out["shape"].append(shape)
            x = self.adaption(x, shape)
            out["objectness"].append(self.cls(x))
            out["deltas"].append(self.reg(x))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(feat_channels=self.feat_channels, deformable_groups=self.deformable_groups, impl=self.impl)
        return config


class GAAnchors:
    """Guided anchoring settings (configuration only): the squares and approxes of a pyramid, the anchor
    coder, the location / shape target and loss settings and the location threshold of sparse anchors.
    Defaults are GA-RPN's; GA-RetinaNet: octave_base_scale=4, anchor_stds 1, shape_matcher
    GA_RETINA_SHAPE_MATCHER."""

    def __init__(self, strides=(4, 8, 16, 32, 64), octave_base_scale=8, scales_per_octave=3, ratios=(0.5, 1.0, 2.0),
                 anchor_stds=ANCHOR_STDS, loc_threshold=0.01, center_ratio=0.2, ignore_ratio=0.5, loc_alpha=0.25,
                 loc_gamma=2.0, loc_negative_weight=0.1, shape_beta=0.2, shape_matcher=GA_RPN_SHAPE_MATCHER,
                 shape_samples=256, shape_positive_fraction=0.5):
        self.strides = tuple(int(s) for s in strides)
        self.octave_base_scale = float(octave_base_scale)
        self.approx = AnchorGenerator(self.strides, ratios=ratios, octave_base_scale=octave_base_scale,
                                      scales_per_octave=scales_per_octave)
        self.square = AnchorGenerator(self.strides, ratios=(1.0,), scales=(octave_base_scale,))
        self.anchor_stds = tuple(float(s) for s in anchor_stds)
        self.loc_threshold = float(loc_threshold)
        self.center_ratio, self.ignore_ratio = float(center_ratio), float(ignore_ratio)
        self.loc_alpha, self.loc_gamma = float(loc_alpha), float(loc_gamma)
        self.loc_negative_weight, self.shape_beta = float(loc_negative_weight), float(shape_beta)
        self.shape_matcher = shape_matcher
        self.shape_samples = None if shape_samples is None else int(shape_samples)
        self.shape_positive_fraction = float(shape_positive_fraction)

    @classmethod
    def from_block(cls, block):
        """From a config block of configs/guided_anchoring.py (levels, octave_base_scale, shape_pos_iou, ...)."""
        b = block
        return cls([2 ** lvl for lvl in b.levels], octave_base_scale=b.octave_base_scale,
                   scales_per_octave=b.scales_per_octave, ratios=b.anchor_ratios, anchor_stds=b.anchor_stds,
                   loc_threshold=b.loc_threshold, center_ratio=b.center_ratio, ignore_ratio=b.ignore_ratio,
                   loc_alpha=b.loc_focal_alpha, loc_gamma=b.loc_focal_gamma, loc_negative_weight=b.loc_negative_weight,
                   shape_beta=b.shape_beta,
                   shape_matcher=MaxIoUMatcher(b.shape_pos_iou, b.shape_neg_iou, min_pos_iou=b.shape_min_pos_iou),
                   shape_samples=b.shape_samples, shape_positive_fraction=b.shape_positive_fraction)

    def squares(self, sizes):
        """List of [H_l * W_l, 4] for one (H_l, W_l) per level."""
        return self.square(sizes)

    def approxes(self, sizes):
        """[N, A, 4] over all levels (N = sum H_l * W_l)."""
        per = self.approx.num_anchors
        return tf.concat([tf.reshape(a, [-1, per, 4]) for a in self.approx(sizes)], 0)

    def location_valid(self, sizes, image_sizes):
        """[B, N] bool: locations inside the un-padded image (mmdetection: allowed_border -1)."""
        return tf.concat(self.square.valid_flags(sizes, image_sizes), 1)


def guided_anchor_losses(loc, shape, anchors, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None, seed=None):
    """Location and shape losses; also returns the flat guided anchors [B, N, 4] (no gradient) and the
    locations inside the images [B, N].

    Args:
      loc, shape: lists of per-level head outputs. anchors: GAAnchors (all the settings). gt_boxes
      [B, G, 4], gt_classes [B, G] (< 0 padding). image_sizes [B, 2]. gt_is_crowd: optional [B, G] bool;
      crowd boxes are no location or shape targets (mmdetection passes them to neither).
    """
    sizes = feature_sizes(loc)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.convert_to_tensor(gt_classes)
    if gt_is_crowd is not None:
        gt_classes = tf.where(tf.cast(gt_is_crowd, tf.bool), -1, gt_classes)
    valid = anchors.location_valid(sizes, image_sizes)
    loc_targets = ga.ga_loc_targets(gt_boxes, gt_classes >= 0, sizes, anchors.strides, anchors.octave_base_scale,
                                    anchors.center_ratio, anchors.ignore_ratio, anchors.loc_negative_weight)
    loss_loc = ga.location_loss([tf.cast(l, tf.float32)[..., 0] for l in loc], loc_targets, anchors.loc_alpha,
                                anchors.loc_gamma)
    squares = tf.concat(anchors.squares(sizes), 0)
    shape_targets = ga.approx_shape_targets(anchors.approxes(sizes), gt_boxes, gt_classes, valid,
                                            anchors.shape_matcher, num_samples=anchors.shape_samples,
                                            positive_fraction=anchors.shape_positive_fraction, seed=seed)
    flat_shape = flatten_levels(shape, 2)
    loss_shape = ga.shape_loss(flat_shape, squares, shape_targets, stds=anchors.anchor_stds, beta=anchors.shape_beta)
    guided = tf.stop_gradient(ga.guided_anchors(flat_shape, squares, anchors.anchor_stds))
    return {"loss_loc": loss_loc, "loss_shape": loss_shape}, guided, valid


def ga_rpn_losses(outputs, anchors, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None, matcher=RPN_MATCHER,
                  num_samples=256, positive_fraction=0.5, seed=None, box_stds=GA_RPN_BOX_STDS, beta=1.0):
    """All GA-RPN losses: {"loss_loc", "loss_shape", "rpn_cls", "rpn_box"} (scalars, float32); the RPN
    losses (rpn_losses) on the guided anchors of every location inside the image, as mmdetection."""
    out, guided, valid = guided_anchor_losses(outputs["loc"], outputs["shape"], anchors, gt_boxes, gt_classes,
                                              image_sizes, gt_is_crowd=gt_is_crowd, seed=seed)
    out.update(rpn_losses(flatten_levels(outputs["objectness"], 1)[..., 0], flatten_levels(outputs["deltas"], 4),
                          guided, gt_boxes, gt_classes, anchor_valid=valid, gt_is_crowd=gt_is_crowd, matcher=matcher,
                          num_samples=num_samples, positive_fraction=positive_fraction, seed=seed, stds=box_stds,
                          beta=beta))
    return out


def sparse_anchors(loc, shape, anchors):
    """Per level: guided anchors [B, H * W, 4] and their mask [B, H * W] (sigmoid(loc) >= anchors.loc_threshold)."""
    squares = anchors.squares(feature_sizes(loc))
    boxes, masks = [], []
    for level_loc, level_shape, level_squares in zip(loc, shape, squares):
        batch = tf.shape(level_loc)[0]
        flat_shape = tf.reshape(tf.cast(tf.stop_gradient(level_shape), tf.float32), [batch, -1, 2])
        boxes.append(ga.guided_anchors(flat_shape, level_squares, anchors.anchor_stds))
        prob = tf.sigmoid(tf.reshape(tf.cast(tf.stop_gradient(level_loc), tf.float32), [batch, -1]))
        masks.append(prob >= anchors.loc_threshold)
    return boxes, masks


def ga_rpn_proposals(outputs, anchors, image_sizes, use_loc_filter=True, pre_nms_top_k=1000, max_proposals=1000,
                     nms_iou=0.7, min_size=0.0, box_stds=GA_RPN_BOX_STDS):
    """GA-RPN proposals (rpn_proposals on the guided anchors); a padded Proposals tuple. use_loc_filter:
    only the sparse anchors (inference); mmdetection's training proposals use every location."""
    boxes, masks = sparse_anchors(outputs["loc"], outputs["shape"], anchors)
    return rpn_proposals(outputs["objectness"], outputs["deltas"], boxes, image_sizes, pre_nms_top_k=pre_nms_top_k,
                         max_proposals=max_proposals, nms_iou=nms_iou, min_size=min_size, stds=box_stds,
                         masks=masks if use_loc_filter else None)


@register_proposal_head("GARPN")
class GARPNSpec:
    """GA-RPN from a config block (`model.rpn` with type "GARPN", configs/guided_anchoring.py); the
    interface of rpn.RPNSpec."""

    DEFAULTS = dict(type="GARPN", **PROPOSAL_DEFAULTS, **GUIDED_DEFAULTS, box_stds=GA_RPN_BOX_STDS, smooth_l1_beta=1.0)

    def __init__(self, block):
        self.block = block = block_options(block, self.DEFAULTS, "model.rpn")
        self.anchors = GAAnchors.from_block(block)
        self.matcher = block_matcher(block)

    def make_head(self, name="rpn_head", impl=None):
        return GARPNHead(self.block.feat_channels, self.block.deformable_groups, impl=impl, name=name)

    def losses(self, outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None):
        b = self.block
        return ga_rpn_losses(outputs, self.anchors, gt_boxes, gt_classes, image_sizes, gt_is_crowd=gt_is_crowd,
                             matcher=self.matcher, num_samples=b.num_samples, positive_fraction=b.positive_fraction,
                             box_stds=b.box_stds, beta=b.smooth_l1_beta)

    def proposals(self, outputs, image_sizes, training=False):
        return ga_rpn_proposals(outputs, self.anchors, image_sizes, use_loc_filter=not training,
                                box_stds=self.block.box_stds, **proposal_settings(self.block, training))
