"""Cascade R-CNN, Cascade Mask R-CNN (Cai & Vasconcelos 2018) and Hybrid Task Cascade (Chen et al. 2019).

All three reuse the two-stage pieces (RPN, BBoxHead / sample_rois / bbox_losses / bbox_detections,
MaskHead / mask targets / mask loss); the stages come from one list, `model.cascade.stages`, each
{pos_iou, bbox_stds, loss_weight}. Stage t matches and samples (at its own IoU threshold, ground
truth appended) from the boxes refined by stage t-1 (gradient-stopped; the RPN proposals for stage 1)
and regresses with its own stds; its losses are scaled by its loss_weight (keys `s{t}_...`).
Inference: the stages run in sequence on the refined boxes; the class logits are averaged over the
stages and decoded with the last stage's deltas. Differences from mmdetection: refined boxes of the
appended ground truth stay in the next stage's pool (mmdetection drops them), and refinement uses the
arg-max class for class-specific regression (mmdetection uses the label of positives).

Cascade Mask R-CNN: a mask head per stage trained on that stage's positives; inference averages the
stages' mask probabilities on the final boxes.
HTC (model.htc): interleaved (stage t's mask branch samples from the boxes stage t's box branch just
refined), mask information flow (HTCMaskHead), the semantic branch (SemanticHead, its features
RoI-pooled at stride 8 and added to box and mask RoI features, `semantic=False` turns it off), and
the mask of the last stage, run with the flow of all previous stages.
"""

import keras
import tensorflow as tf

from tfdet.modeling.detectors.base import detection_outputs, image_sizes_of
from tfdet.modeling.detectors.two_stage import TwoStageDetector
from tfdet.modeling.roi_heads import bbox_head, htc_heads, mask_head
from tfdet.ops import box_ops
from tfdet.ops.matching import MaxIoUMatcher
from tfdet.ops.roi_align import roi_align


def refine_boxes(cls_logits, deltas, rois, image_sizes, num_classes, stds):
    """Boxes [B, K, 4] regressed from `rois` by one stage (arg-max foreground class for class-specific
    deltas), clipped to the image, gradient-stopped."""
    labels = tf.argmax(cls_logits[..., :num_classes], axis=-1, output_type=tf.int32)
    chosen = bbox_head.select_class_deltas(tf.cast(deltas, tf.float32), labels, num_classes)
    return tf.stop_gradient(box_ops.decode_boxes(chosen, tf.cast(rois, tf.float32), stds=stds,
                                                 max_shape=image_sizes))


def pool_single_level(feature_map, rois, size, stride, impl=None):
    """RoIAlign [B, K, size, size, C] of [B, K, 4] boxes on one [B, H, W, C] map of the given stride."""
    shape = tf.shape(rois)
    index = tf.repeat(tf.range(shape[0]), shape[1])
    pooled = roi_align(feature_map, tf.reshape(rois, [-1, 4]), index, size, spatial_scale=1.0 / stride,
                       sampling_ratio=0, aligned=True, impl=impl)
    return tf.reshape(pooled, [shape[0], shape[1], size, size, feature_map.shape[-1]])


class CascadeDetector(TwoStageDetector):
    """The cascade family; subclasses set with_mask / htc."""

    htc = False

    def _build_roi_heads(self):
        c = self.model_config
        roi = c.roi
        self.stage_settings = [dict(s) for s in c.cascade.stages]
        self.matchers = [MaxIoUMatcher(s["pos_iou"], s["pos_iou"], min_pos_iou=s["pos_iou"], match_low_quality=False)
                         for s in self.stage_settings]
        self.box_roi_align = self._aligner(roi.pooled_size, "box_roi_align")
        self.bbox_heads = [bbox_head.BBoxHead(self.num_classes, roi.fc_dim, class_agnostic=roi.class_agnostic,
                                              name=f"bbox_head{t + 1}") for t in range(len(self.stage_settings))]
        h = c.get("htc", {}) if self.htc else {}
        self.with_semantic = bool(self.htc and h.get("semantic", True))
        self.mask_flow = bool(self.htc and h.get("mask_info_flow", True))
        if self.with_mask:
            m = c.mask
            self.mask_roi_align = self._aligner(m.pooled_size, "mask_roi_align")
            self.mask_heads = [htc_heads.HTCMaskHead(self.num_classes, m.num_convs, m.channels, upsample=m.upsample,
                                                     class_agnostic=m.class_agnostic, impl=c.get("ops_impl"),
                                                     with_flow=self.mask_flow and t > 0, name=f"mask_head{t + 1}")
                               for t in range(len(self.stage_settings))]
        if self.with_semantic:
            self.semantic_head = htc_heads.SemanticHead(h["semantic_classes"], levels=c.rpn.levels,
                                                        fusion_level=h.get("fusion_level", 3),
                                                        num_convs=h.get("semantic_convs", 4),
                                                        channels=c.neck.out_channels, name="semantic_head")

    # Feature helpers ---------------------------------------------------------------------------------
    def _semantic(self, features):
        return self.semantic_head(features) if self.with_semantic else (None, None)

    def _pool(self, aligner, maps, rois, semantic_features):
        pooled = aligner(maps, rois)
        if semantic_features is not None:
            stride = 2 ** self.semantic_head.fusion_level
            pooled = pooled + pool_single_level(semantic_features, rois, pooled.shape[2], stride,
                                                impl=self.model_config.get("ops_impl"))
        return pooled

    def mask_logits(self, stage, mask_features):
        """Stage `stage`'s mask logits on pooled mask features, with the flow of stages 0..stage-1."""
        previous = None
        for t in (range(stage + 1) if self.mask_flow else [stage]):
            logits, previous = self.mask_heads[t](mask_features, previous)
        return logits

    def _sample(self, stage, boxes, valid, batch):
        c = self.model_config
        return bbox_head.sample_rois(boxes, valid, batch["gt_boxes"], batch["gt_classes"], self.num_classes,
                                     gt_is_crowd=batch.get("gt_is_crowd"), matcher=self.matchers[stage],
                                     num_samples=c.roi.num_samples, positive_fraction=c.roi.positive_fraction,
                                     stds=self.stage_settings[stage]["bbox_stds"])

    # Training ----------------------------------------------------------------------------------------
    def _mask_loss(self, stage, maps, targets, batch, semantic_features):
        c = self.model_config
        max_pos = max(int(c.roi.num_samples * c.roi.positive_fraction), 1)
        rois, matched = targets.rois[:, :max_pos], targets.matched_gt[:, :max_pos]
        positive = targets.is_positive[:, :max_pos]
        logits = self.mask_logits(stage, self._pool(self.mask_roi_align, maps, rois, semantic_features))
        return mask_head.mask_loss(logits, self._mask_targets(batch, rois, matched),
                                   tf.where(positive, targets.labels[:, :max_pos], 0), tf.cast(positive, tf.float32))

    def stage_targets(self, batch, proposals, maps, semantic_features=None):
        """Runs the box stages on training proposals: a list per stage of (targets, cls_logits, deltas,
        refined boxes) -- exposed for tests."""
        sizes = image_sizes_of(batch)
        boxes, valid = proposals.boxes, proposals.valid
        results = []
        for t, head in enumerate(self.bbox_heads):
            targets = self._sample(t, boxes, valid, batch)
            cls_logits, deltas = head(self._pool(self.box_roi_align, maps, targets.rois, semantic_features))
            refined = refine_boxes(cls_logits, deltas, targets.rois, sizes, self.num_classes,
                                   self.stage_settings[t]["bbox_stds"])
            results.append((targets, cls_logits, deltas, refined))
            boxes, valid = refined, targets.valid
        return results

    def compute_losses(self, batch, training=True):
        c = self.model_config
        out, proposals, features = self._train_proposals(batch, training)
        maps = self._roi_maps(features)
        semantic_logits, semantic_features = self._semantic(features)
        if self.with_semantic:
            if "semantic" not in batch:
                raise ValueError("HTC with the semantic branch needs batch['semantic'] [B, H, W] (255 = ignore); "
                                 "set model.htc.semantic = False for data without semantic maps.")
            h = c.htc
            out["semantic"] = htc_heads.semantic_loss(semantic_logits, batch["semantic"],
                                                      weight=h.get("semantic_loss_weight", 0.2))
        for t, (targets, cls_logits, deltas, refined) in enumerate(
                self.stage_targets(batch, proposals, maps, semantic_features)):
            weight = self.stage_settings[t]["loss_weight"]
            stage_losses = bbox_head.bbox_losses(cls_logits, deltas, targets, self.num_classes,
                                                 loss_box=c.roi.loss_box, beta=c.roi.smooth_l1_beta)
            out.update({f"s{t + 1}_{k}": weight * v for k, v in stage_losses.items()})
            if self.with_mask:
                # HTC interleaves: the mask branch samples from the boxes this stage just refined.
                interleaved = self.htc and c.htc.get("interleaved", True)
                mask_rois = self._sample(t, refined, targets.valid, batch) if interleaved else targets
                out[f"s{t + 1}_mask"] = weight * self._mask_loss(t, maps, mask_rois, batch, semantic_features)
        return out

    # Inference ---------------------------------------------------------------------------------------
    def detect(self, images, image_sizes):
        proposals, features = self._test_proposals(images, image_sizes)
        maps = self._roi_maps(features)
        _, semantic_features = self._semantic(features)
        rois, logits_sum = proposals.boxes, 0.0
        last = len(self.bbox_heads) - 1
        for t, head in enumerate(self.bbox_heads):
            cls_logits, deltas = head(self._pool(self.box_roi_align, maps, rois, semantic_features))
            logits_sum += cls_logits
            if t < last:
                rois = refine_boxes(cls_logits, deltas, rois, image_sizes, self.num_classes,
                                    self.stage_settings[t]["bbox_stds"])
        dets = self._detections(logits_sum / len(self.bbox_heads), deltas, rois, proposals.valid, image_sizes,
                                self.stage_settings[last]["bbox_stds"])
        out = detection_outputs(dets)
        if self.with_mask:
            pooled = self._pool(self.mask_roi_align, maps, dets.boxes, semantic_features)
            if self.htc:
                out["detection_masks"] = mask_head.mask_probabilities(self.mask_logits(last, pooled), dets.classes)
            else:
                probs = [mask_head.mask_probabilities(self.mask_logits(t, pooled), dets.classes)
                         for t in range(last + 1)]
                out["detection_masks"] = tf.add_n(probs) / len(probs)
        return out


@keras.saving.register_keras_serializable(package="tfdet")
class CascadeRCNN(CascadeDetector):
    """Cascade R-CNN with FPN."""


@keras.saving.register_keras_serializable(package="tfdet")
class CascadeMaskRCNN(CascadeDetector):
    """Cascade Mask R-CNN: a mask head per stage."""

    with_mask = True


@keras.saving.register_keras_serializable(package="tfdet")
class HybridTaskCascade(CascadeDetector):
    """HTC: interleaved box / mask stages, mask information flow, the semantic branch."""

    with_mask = True
    htc = True
