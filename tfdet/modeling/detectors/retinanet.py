"""RetinaNet (Lin et al. 2017): backbone + FPN P3-P7 + RetinaHead. Composition only."""

import keras
import tensorflow as tf

from tfdet.modeling.dense_heads.retina_head import RetinaHead, retina_detections, retina_losses
from tfdet.modeling.dense_heads.rpn import flatten_levels
from tfdet.modeling.detectors.base import Detector, image_sizes_of
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.matching import MaxIoUMatcher


@keras.saving.register_keras_serializable(package="tfdet")
class RetinaNet(Detector):

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        r = self.model_config.retina
        self.anchor_generator = AnchorGenerator(strides=[2 ** lvl for lvl in r.levels], ratios=r.anchor_ratios,
                                                octave_base_scale=r.octave_base_scale,
                                                scales_per_octave=r.scales_per_octave)
        self.matcher = MaxIoUMatcher(r.pos_iou, r.neg_iou, min_pos_iou=r.min_pos_iou, match_low_quality=True)
        self.head = RetinaHead(self.num_classes, self.anchor_generator.num_anchors, r.feat_channels, r.num_convs,
                               r.prior_prob, name="retina_head")

    def _head(self, images, training):
        features = self.features(images, training=training)
        maps = [features[lvl] for lvl in self.model_config.retina.levels]
        cls_outputs, reg_outputs = self.head(maps)
        sizes = [(tf.shape(m)[1], tf.shape(m)[2]) for m in maps]
        return cls_outputs, reg_outputs, sizes, self.anchor_generator(sizes)

    def compute_losses(self, batch, training=True):
        r = self.model_config.retina
        sizes = image_sizes_of(batch)
        cls_outputs, reg_outputs, feature_sizes, anchors = self._head(batch["images"], training)
        valid = tf.concat(self.anchor_generator.valid_flags(feature_sizes, sizes), axis=1)
        return retina_losses(flatten_levels(cls_outputs, self.num_classes), flatten_levels(reg_outputs, 4),
                             tf.concat(anchors, 0), batch["gt_boxes"], batch["gt_classes"], self.num_classes,
                             anchor_valid=valid, gt_is_crowd=batch.get("gt_is_crowd"), matcher=self.matcher,
                             alpha=r.focal_alpha, gamma=r.focal_gamma)

    def detect(self, images, image_sizes):
        r = self.model_config.retina
        cls_outputs, reg_outputs, _, anchors = self._head(images, False)
        dets = retina_detections(cls_outputs, reg_outputs, anchors, image_sizes, self.num_classes,
                                 pre_nms_top_k=r.pre_nms_top_k, score_threshold=r.score_threshold, nms_iou=r.nms_iou,
                                 max_detections=r.max_detections)
        return {"num_detections": dets.num_valid, "detection_boxes": dets.boxes, "detection_scores": dets.scores,
                "detection_classes": dets.classes}
