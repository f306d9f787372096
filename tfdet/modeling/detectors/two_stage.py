"""Two-stage detectors: Faster R-CNN, Mask R-CNN, Keypoint R-CNN (FPN, RPN, RoI heads).

Composition only: the math lives in tfdet.modeling.dense_heads (the proposal head, plain RPN or GA-RPN by
model.rpn.type, see detectors/rpn.py) and tfdet.modeling.roi_heads.
Mask and keypoint branches train on the first num_samples * positive_fraction sampled RoIs (the
sampler puts every sampled positive there) weighted by is_positive, and run at inference on the
detected boxes.
"""

import keras
import tensorflow as tf

from tfdet.layers.roi_align import MultiLevelRoIAlign
from tfdet.modeling.detectors.base import detection_outputs
from tfdet.modeling.detectors.rpn import RPN
from tfdet.modeling.roi_heads import bbox_head, keypoint_head, mask_head
from tfdet.ops.matching import MaxIoUMatcher


class TwoStageDetector(RPN):
    """RPN (plain or GA-RPN) + box head (+ mask head when `with_mask`, + keypoint head when `with_keypoints`)."""

    with_mask = False
    with_keypoints = False

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self._build_roi_heads()

    def _aligner(self, size, name):
        roi = self.model_config.roi
        return MultiLevelRoIAlign(size, min_level=roi.levels[0], max_level=roi.levels[-1],
                                  sampling_ratio=roi.sampling_ratio, impl=self.model_config.get("ops_impl"), name=name)

    def _build_roi_heads(self):
        c = self.model_config
        roi = c.roi
        self.rcnn_matcher = MaxIoUMatcher(roi.pos_iou, roi.neg_iou, min_pos_iou=roi.pos_iou, match_low_quality=False)
        self.box_roi_align = self._aligner(roi.pooled_size, "box_roi_align")
        self.bbox_head = bbox_head.BBoxHead(self.num_classes, roi.fc_dim, class_agnostic=roi.class_agnostic,
                                            name="bbox_head")
        if self.with_mask:
            m = c.mask
            self.mask_roi_align = self._aligner(m.pooled_size, "mask_roi_align")
            self.mask_head = mask_head.MaskHead(self.num_classes, m.num_convs, m.channels, upsample=m.upsample,
                                                class_agnostic=m.class_agnostic, impl=c.get("ops_impl"),
                                                name="mask_head")
        if self.with_keypoints:
            k = c.keypoint
            self.keypoint_roi_align = self._aligner(k.pooled_size, "keypoint_roi_align")
            self.keypoint_head = keypoint_head.KeypointHead(k.num_keypoints, k.num_convs, k.channels,
                                                            name="keypoint_head")

    def _roi_maps(self, features):
        return [features[lvl] for lvl in self.model_config.roi.levels]

    def _mask_targets(self, batch, rois, matched_gt):
        layout = self.model_config.mask.get("gt_masks", "box")
        if layout not in ("box", "image"):
            raise ValueError(f"model.mask.gt_masks must be 'box' or 'image', got {layout!r}.")
        gt_boxes = tf.cast(batch["gt_boxes"], tf.float32)
        return mask_head.mask_targets(batch["gt_masks"], rois, matched_gt, 2 * self.model_config.mask.pooled_size,
                                      gt_boxes=gt_boxes if layout == "box" else None,
                                      impl=self.model_config.get("ops_impl"))

    def compute_losses(self, batch, training=True):
        c = self.model_config
        gt_boxes, gt_classes = tf.cast(batch["gt_boxes"], tf.float32), tf.cast(batch["gt_classes"], tf.int32)
        crowd = batch.get("gt_is_crowd")
        out, proposals, features = self._train_proposals(batch, training)
        targets = bbox_head.sample_rois(proposals.boxes, proposals.valid, gt_boxes, gt_classes, self.num_classes,
                                        gt_is_crowd=crowd, matcher=self.rcnn_matcher, num_samples=c.roi.num_samples,
                                        positive_fraction=c.roi.positive_fraction, stds=c.roi.bbox_stds)
        maps = self._roi_maps(features)
        cls_logits, box_deltas = self.bbox_head(self.box_roi_align(maps, targets.rois))
        out.update(bbox_head.bbox_losses(cls_logits, box_deltas, targets, self.num_classes, loss_box=c.roi.loss_box,
                                         beta=c.roi.smooth_l1_beta))
        # Every sampled positive sits in the first max_pos slots.
        max_pos = max(int(c.roi.num_samples * c.roi.positive_fraction), 1)
        pos_rois, pos_gt = targets.rois[:, :max_pos], targets.matched_gt[:, :max_pos]
        pos_weights = tf.cast(targets.is_positive[:, :max_pos], tf.float32)
        pos_labels = tf.where(targets.is_positive[:, :max_pos], targets.labels[:, :max_pos], 0)
        if self.with_mask:
            mask_logits = self.mask_head(self.mask_roi_align(maps, pos_rois))
            mask_targets = self._mask_targets(batch, pos_rois, pos_gt)
            out["mask"] = mask_head.mask_loss(mask_logits, mask_targets, pos_labels, pos_weights)
        if self.with_keypoints:
            heatmaps = self.keypoint_head(self.keypoint_roi_align(maps, pos_rois))
            kp_targets = keypoint_head.keypoint_targets(batch["gt_keypoints"], pos_rois, pos_gt, heatmaps.shape[2])
            out["keypoint"] = c.keypoint.loss_weight * keypoint_head.keypoint_loss(heatmaps, kp_targets)
        return out

    def _detections(self, cls_logits, deltas, rois, roi_valid, image_sizes, stds):
        """The box head's final detections with the config's roi test settings (score threshold, NMS)."""
        r = self.model_config.roi
        return bbox_head.bbox_detections(cls_logits, deltas, rois, roi_valid, image_sizes,
                                         self.num_classes, stds=stds, score_threshold=r.score_threshold,
                                         nms_iou=r.nms_iou, max_detections=r.max_detections,
                                         nms_method=r.nms_method, soft_nms_sigma=r.soft_nms_sigma)

    def detect(self, images, image_sizes):
        c = self.model_config
        proposals, features = self._test_proposals(images, image_sizes)
        maps = self._roi_maps(features)
        cls_logits, box_deltas = self.bbox_head(self.box_roi_align(maps, proposals.boxes))
        dets = self._detections(cls_logits, box_deltas, proposals.boxes, proposals.valid, image_sizes, c.roi.bbox_stds)
        out = detection_outputs(dets)
        valid = (dets.classes >= 0)
        if self.with_mask:
            mask_logits = self.mask_head(self.mask_roi_align(maps, dets.boxes))
            out["detection_masks"] = mask_head.mask_probabilities(mask_logits, dets.classes)
        if self.with_keypoints:
            heatmaps = self.keypoint_head(self.keypoint_roi_align(maps, dets.boxes))
            points = keypoint_head.heatmaps_to_keypoints(heatmaps, dets.boxes)
            out["detection_keypoints"] = tf.where(valid[..., None, None], points, 0.0)
        return out


@keras.saving.register_keras_serializable(package="tfdet")
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017)."""


@keras.saving.register_keras_serializable(package="tfdet")
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN (He et al. 2017): Faster R-CNN + the FCN mask head."""

    with_mask = True


@keras.saving.register_keras_serializable(package="tfdet")
class KeypointRCNN(TwoStageDetector):
    """Keypoint R-CNN (He et al. 2017; detectron2 keypoint_rcnn_R_50_FPN): Faster R-CNN + the keypoint head."""

    with_keypoints = True
