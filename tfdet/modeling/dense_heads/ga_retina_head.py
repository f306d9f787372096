"""GA-RetinaNet head (mmdetection GARetinaHead, ga_retinanet_r50_fpn_1x_coco: 37.0 box AP).

Per level: num_convs 3x3 conv + ReLU towers for classification and regression (as RetinaNet); the
location branch (1x1) on the classification tower, the shape branch (1x1) on the regression tower;
each tower is adapted by its own FeatureAdaption from the shape prediction; then 3x3 convs give C class
logits and 4 deltas for the one guided anchor of each location.

Defaults: strides (8, 16, 32, 64, 128), approxes octave_base_scale 4 x 3 scales x 3 ratios, squares of
scale 4, anchor and box coder stds 1; shape targets ApproxMaxIoU 0.5 / 0.4 (min 0.4), 256 samples;
class targets MaxIoU 0.5 / 0.5 (min 0) on the guided anchors; focal loss (0.25, 2) and smooth L1
(beta 0.04), both over the number of positives. Inference: locations with sigmoid(loc) >= 0.01, the
1000 best per level, class-wise NMS 0.5, scores >= 0.05, 100 detections.
"""

import keras
import tensorflow as tf

from tfdet.modeling.dense_heads.ga_head import FeatureAdaption, GAAnchors, guided_anchor_losses, sparse_anchors
from tfdet.modeling.dense_heads.ga_head import GUIDED_DEFAULTS
from tfdet.modeling.dense_heads.retina_head import RETINA_DEFAULTS, UNIT_STDS, detection_settings, loss_settings
from tfdet.modeling.dense_heads.retina_head import retina_detections
from tfdet.modeling.dense_heads.retina_head import retina_losses
from tfdet.modeling.dense_heads.rpn import block_matcher, flatten_levels
from tfdet.modeling.registry import block_options, register_dense_head
from tfdet.ops.matching import MaxIoUMatcher

GA_RETINA_MATCHER = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0)


@keras.saving.register_keras_serializable(package="tfdet")
class GARetinaHead(keras.layers.Layer):
    """Call on a list of [B, H_l, W_l, C_in] maps; returns a dict of per-level lists: "loc" [B, H, W, 1],
    "shape" [B, H, W, 2], "cls" [B, H, W, num_classes], "deltas" [B, H, W, 4]. impl: the feature
    adaptions' deformable conv implementation."""

    def __init__(self, num_classes, feat_channels=256, num_convs=4, deformable_groups=4, prior_prob=0.01, impl=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.impl = impl
        self.num_classes, self.feat_channels, self.num_convs = int(num_classes), int(feat_channels), int(num_convs)
        self.deformable_groups, self.prior_prob = int(deformable_groups), float(prior_prob)
        prior = keras.initializers.Constant(float(-tf.math.log((1 - self.prior_prob) / self.prior_prob)))
        normal = keras.initializers.RandomNormal(stddev=0.01)

        def conv(filters, size, name, **kw):
            return keras.layers.Conv2D(filters, size, padding="same", kernel_initializer=normal, name=name, **kw)

        self.cls_convs = [conv(self.feat_channels, 3, f"cls_conv{i}", activation="relu") for i in range(num_convs)]
        self.reg_convs = [conv(self.feat_channels, 3, f"reg_conv{i}", activation="relu") for i in range(num_convs)]
        self.conv_loc = conv(1, 1, "conv_loc", bias_initializer=prior)
        self.conv_shape = conv(2, 1, "conv_shape")
        self.adaption_cls = FeatureAdaption(self.feat_channels, 3, self.deformable_groups, impl=impl, name="adaption_cls")
        self.adaption_reg = FeatureAdaption(self.feat_channels, 3, self.deformable_groups, impl=impl, name="adaption_reg")
        self.cls = conv(self.num_classes, 3, "retina_cls", bias_initializer=prior)
        self.reg = conv(4, 3, "retina_reg")

    def build(self, input_shape):
        shape = input_shape[0]
        inner = (*shape[:-1], self.feat_channels)
        for tower in (self.cls_convs, self.reg_convs):
            for i, layer in enumerate(tower):
                layer.build(shape if i == 0 else inner)
        last = inner if self.num_convs else shape
        for layer in (self.conv_loc, self.conv_shape, self.adaption_cls, self.adaption_reg):
            layer.build(last)
        self.cls.build(inner)
        self.reg.build(inner)
        self.built = True

    def call(self, features):
        out = {"loc": [], "shape": [], "cls": [], "deltas": []}
        for feature in features:
            cls_feat = reg_feat = feature
            for layer in self.cls_convs:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs:
                reg_feat = layer(reg_feat)
            shape = self.conv_shape(reg_feat)
            out["loc"].append(self.conv_loc(cls_feat))
            out["shape"].append(shape)
            out["cls"].append(self.cls(self.adaption_cls(cls_feat, shape)))
            out["deltas"].append(self.reg(self.adaption_reg(reg_feat, shape)))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, feat_channels=self.feat_channels, num_convs=self.num_convs,
                      deformable_groups=self.deformable_groups, prior_prob=self.prior_prob, impl=self.impl)
        return config


def ga_retina_losses(outputs, anchors, gt_boxes, gt_classes, image_sizes, num_classes, gt_is_crowd=None, seed=None,
                     matcher=GA_RETINA_MATCHER, alpha=0.25, gamma=2.0, beta=0.04, stds=UNIT_STDS):
    """{"loss_loc", "loss_shape", "retina_cls", "retina_box"} (float32 scalars): the guided anchor losses,
    then RetinaNet's (retina_losses) on the guided anchors. anchors: GAAnchors(strides (8, ..., 128),
    octave_base_scale=4, anchor_stds=UNIT_STDS, shape_matcher=GA_RETINA_SHAPE_MATCHER)."""
    out, guided, valid = guided_anchor_losses(outputs["loc"], outputs["shape"], anchors, gt_boxes, gt_classes,
                                              image_sizes, gt_is_crowd=gt_is_crowd, seed=seed)
    out.update(retina_losses(flatten_levels(outputs["cls"], num_classes), flatten_levels(outputs["deltas"], 4), guided,
                             gt_boxes, gt_classes, num_classes, anchor_valid=valid, gt_is_crowd=gt_is_crowd,
                             matcher=matcher, alpha=alpha, gamma=gamma, beta=beta, stds=stds))
    return out


def ga_retina_detections(outputs, anchors, image_sizes, pre_nms_top_k=1000, score_threshold=0.05, nms_iou=0.5,
                         max_detections=100, stds=UNIT_STDS):
    """Detections (tfdet.ops.nms.Detections, padded to max_detections): retina_detections on the sparse
    guided anchors (locations with sigmoid(loc) >= anchors.loc_threshold)."""
    guided, masks = sparse_anchors(outputs["loc"], outputs["shape"], anchors)
    return retina_detections(outputs["cls"], outputs["deltas"], guided, image_sizes, outputs["cls"][0].shape[-1],
                             pre_nms_top_k=pre_nms_top_k, score_threshold=score_threshold, nms_iou=nms_iou,
                             max_detections=max_detections, stds=stds, masks=masks)


@register_dense_head("GARetina")
class GARetinaSpec:
    """GA-RetinaNet from a config block (`model.retina` with type "GARetina", configs/guided_anchoring.py);
    the interface of retina_head.RetinaSpec."""

    DEFAULTS = {**RETINA_DEFAULTS, **GUIDED_DEFAULTS, "type": "GARetina", "neg_iou": 0.5, "octave_base_scale": 4,
                "anchor_stds": UNIT_STDS, "shape_pos_iou": 0.5, "shape_neg_iou": 0.4, "shape_min_pos_iou": 0.4,
                "smooth_l1_beta": 0.04}

    def __init__(self, block, num_classes):
        self.block = block = block_options(block, self.DEFAULTS, "model.retina")
        self.num_classes = int(num_classes)
        self.anchors = GAAnchors.from_block(block)
        self.matcher = block_matcher(block)

    def make_head(self, name="retina_head", impl=None):
        b = self.block
        return GARetinaHead(self.num_classes, b.feat_channels, b.num_convs, b.deformable_groups, b.prior_prob,
                            impl=impl, name=name)

    def losses(self, outputs, gt_boxes, gt_classes, image_sizes, gt_is_crowd=None):
        return ga_retina_losses(outputs, self.anchors, gt_boxes, gt_classes, image_sizes, self.num_classes,
                                gt_is_crowd=gt_is_crowd, matcher=self.matcher, **loss_settings(self.block))

    def detections(self, outputs, image_sizes):
        return ga_retina_detections(outputs, self.anchors, image_sizes, **detection_settings(self.block))
