"""Cascade RoI heads: Cascade (Mask) R-CNN (Cai & Vasconcelos 2018) and Hybrid Task Cascade (Chen et al.
2019), as specs chosen by `model.roi.type` ("cascade", "htc"); the interface of
tfdet.modeling.roi_heads.standard.StandardRoIHead.

The stages come from one list, `model.cascade.stages`, each {pos_iou, bbox_stds, loss_weight}. Stage t
matches and samples (at its own IoU threshold, ground truth appended) from the boxes refined by stage
t-1 (gradient-stopped; the proposals for stage 1) and regresses with its own stds; its losses are
scaled by its loss_weight (keys `s{t}_...`). Inference: the stages run in sequence on the refined
boxes; the class logits are averaged over the stages and decoded with the last stage's deltas.
Differences from mmdetection: refined boxes of the appended ground truth stay in the next stage's
pool (mmdetection drops them), and refinement uses the arg-max class for class-specific regression
(mmdetection uses the label of positives).

Cascade Mask R-CNN: a mask head per stage trained on that stage's positives; inference averages the
stages' mask probabilities on the final boxes.
HTC (`model.htc`): interleaved (stage t's mask branch samples from the boxes stage t's box branch just
refined), mask information flow (HTCMaskHead), the semantic branch (SemanticHead, its features
RoI-pooled at its fusion level with the box pooler's settings and added to box and mask RoI features;
`semantic=False` turns it off), and the mask of the last stage, run with the flow of all previous
stages.
HTC options for mmdetection's exact arithmetic (tools/zoo_reference/mmdet_conventions.md 2.7, 2.11; the
defaults keep tfdet's own): `semantic_fusion` (htc_heads.SemanticHead's `fusion`), `semantic_pool`
("direct": the semantic features pooled at each branch's size; "14_avg": pooled 14x14 and averaged over
2x2 cells to the box branch's 7x7, as mmdetection's semantic_roi_extractor + adaptive_avg_pool2d),
`flow_activation` (None | "relu" after the flow's 1x1 conv, mmdetection's conv_res), `mask_test`
("last": the last stage's mask, mmdetection 3.x; "mean": the mean of every stage's mask probabilities,
each stage run with the flow of the ones before, mmdetection 2.x, whose code measured the zoo's mask AP).
"""

import ml_collections
import tensorflow as tf

from tfdet.modeling.batch import detection_outputs, image_sizes_of
from tfdet.modeling.necks import FPN_DEFAULTS
from tfdet.modeling.registry import ROI_HEADS, as_dict, block_options
from tfdet.modeling.roi_heads import bbox_head, htc_heads, mask_head
from tfdet.modeling.roi_heads.standard import ROI_DEFAULTS, RoIHead, build_box_head, mask_targets, pooler, rcnn_matcher
from tfdet.ops import box_ops

# mmdetection cascade_rcnn_r50_fpn_1x: three stages at IoU 0.5 / 0.6 / 0.7.
CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
CASCADE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
CASCADE_DEFAULTS = dict(stages=[dict(pos_iou=iou, bbox_stds=stds, loss_weight=weight)
                                for iou, stds, weight in zip(CASCADE_IOUS, CASCADE_STDS, CASCADE_LOSS_WEIGHTS)])
STAGE_KEYS = ("pos_iou", "bbox_stds", "loss_weight")
# mmdetection htc_r50_fpn_1x: the semantic branch on COCO-stuff's 183 classes.
HTC_DEFAULTS = dict(semantic=True, semantic_classes=183, fusion_level=3, semantic_convs=4, semantic_loss_weight=0.2,
                    mask_info_flow=True, interleaved=True, semantic_fusion="conv_then_resize", semantic_pool="direct",
                    flow_activation=None, mask_test="last")
HTC_CHOICES = dict(semantic_fusion=htc_heads.FUSIONS, semantic_pool=("direct", "14_avg"),
                   flow_activation=htc_heads.FLOW_ACTIVATIONS, mask_test=("last", "mean"))


def refine_boxes(cls_logits, deltas, rois, image_sizes, num_classes, stds):
    """Boxes [B, K, 4] regressed from `rois` by one stage (arg-max foreground class for class-specific
    deltas), clipped to the image, gradient-stopped."""
    labels = tf.argmax(cls_logits[..., :num_classes], axis=-1, output_type=tf.int32)
    chosen = bbox_head.select_class_deltas(tf.cast(deltas, tf.float32), labels, num_classes)
    return tf.stop_gradient(box_ops.decode_boxes(chosen, tf.cast(rois, tf.float32), stds=stds,
                                                 max_shape=image_sizes))


def stage_settings(block):
    """The validated list of stage dicts of a `model.cascade` block."""
    stages = [dict(s) for s in block_options(block, CASCADE_DEFAULTS, "model.cascade").stages]
    if not stages:
        raise ValueError("model.cascade.stages: at least one stage is needed.")
    for t, stage in enumerate(stages):
        if sorted(stage) != sorted(STAGE_KEYS):
            raise ValueError(f"model.cascade.stages[{t}]: needs exactly the fields {list(STAGE_KEYS)}, got "
                             f"{sorted(stage)}.")
    return stages


@ROI_HEADS.register("cascade")
class CascadeRoIHead(RoIHead):
    """Box stages (+ a mask head per stage with model.mask). HTC's options are off here."""

    DEFAULTS = {**ROI_DEFAULTS, "type": "cascade", "class_agnostic": True}
    model_blocks = ("roi", "cascade", "mask")
    htc = None  # the HTC block (HybridTaskCascadeRoIHead)

    def __init__(self, config, num_classes, impl=None):
        super().__init__(config, num_classes, impl)
        roi = self.roi
        if roi.box_convention != "current":
            raise ValueError(f"model.roi.box_convention {roi.box_convention!r}: the cascade RoI heads run the current "
                             "box convention only (mmdetection 1.x cascade checkpoints are not supported).")
        self.stages = stage_settings(config.get("cascade"))
        self.matchers = [rcnn_matcher(s["pos_iou"], s["pos_iou"]) for s in self.stages]
        self.box_roi_align = pooler(roi, roi.levels, "box_roi_align", impl)
        self.bbox_heads = [build_box_head(roi, num_classes, f"bbox_head{t + 1}") for t in range(len(self.stages))]
        h = self.htc
        self.mask_flow = bool(h and h.mask_info_flow)
        if self.mask is not None:
            m = self.mask
            self.mask_roi_align = pooler(m, roi.levels, "mask_roi_align", impl)
            flow_activation = h.flow_activation if h else None
            self.mask_heads = [htc_heads.HTCMaskHead(num_classes, m.num_convs, m.channels, upsample=m.upsample,
                                                     class_agnostic=m.class_agnostic, norm=m.norm, impl=impl,
                                                     with_flow=self.mask_flow and t > 0,
                                                     flow_activation=flow_activation, name=f"mask_head{t + 1}")
                               for t in range(len(self.stages))]
        self.semantic_head = None
        if h and h.semantic:  # on every neck level, as wide as the neck
            neck = {**FPN_DEFAULTS, **as_dict(config.get("neck"))}
            self.semantic_head = htc_heads.SemanticHead(h.semantic_classes,
                                                        levels=range(neck["min_level"], neck["max_level"] + 1),
                                                        fusion_level=h.fusion_level, num_convs=h.semantic_convs,
                                                        channels=neck["out_channels"], fusion=h.semantic_fusion,
                                                        name="semantic_head")
            # The semantic features are pooled at their one level with the box / mask pooler's settings
            # (14_avg: the box branch's at twice its size, averaged down in _pool).
            level = (h.fusion_level,)
            box = roi if h.semantic_pool == "direct" else ml_collections.ConfigDict(
                {**roi.to_dict(), "pooled_size": 2 * roi.pooled_size})
            self.semantic_box_roi_align = pooler(box, level, "semantic_box_roi_align", impl)
            self.semantic_mask_roi_align = pooler(self.mask, level, "semantic_mask_roi_align", impl)

    # Features ----------------------------------------------------------------------------------------
    def _semantic(self, features):
        return self.semantic_head(features) if self.semantic_head is not None else (None, None)

    def _pool(self, branch, features, rois, semantic_features):
        """RoI features of the "box" or "mask" branch (+ the pooled semantic features with HTC's)."""
        pooled = getattr(self, f"{branch}_roi_align")(features, rois)
        if semantic_features is not None:
            aligner = getattr(self, f"semantic_{branch}_roi_align")
            semantic = aligner({self.htc.fusion_level: semantic_features}, rois)
            if branch == "box" and self.htc.semantic_pool == "14_avg":  # [B, K, 2S, 2S, C] -> mean of 2x2 cells
                size = semantic.shape[2] // 2
                semantic = tf.reduce_mean(tf.reshape(semantic, [tf.shape(semantic)[0], tf.shape(semantic)[1], size, 2,
                                                                size, 2, semantic.shape[-1]]), axis=[3, 5])
            pooled += semantic
        return pooled

    def mask_logits(self, stage, mask_features):
        """Stage `stage`'s mask logits on pooled mask features, with the flow of stages 0..stage-1."""
        if not self.mask_flow:
            return self.mask_heads[stage](mask_features)[0]
        return self.stage_mask_logits(mask_features, stage)[-1]

    def stage_mask_logits(self, mask_features, last=None):
        """[mask logits of stage t] for t = 0..last (default: every stage): with mask information flow one pass
        through the heads, each receiving the previous one's features; without, each head on its own."""
        last = len(self.mask_heads) - 1 if last is None else last
        out, previous = [], None
        for t in range(last + 1):
            logits, previous = self.mask_heads[t](mask_features, previous if self.mask_flow else None)
            out.append(logits)
        return out

    # Training ----------------------------------------------------------------------------------------
    def stage_targets(self, features, proposals, batch, semantic_features=None):
        """Runs the box stages on training proposals: a list per stage of (targets, cls_logits, deltas,
        refined boxes)."""
        sizes = image_sizes_of(batch)
        boxes, valid = proposals.boxes, proposals.valid
        results = []
        for t, head in enumerate(self.bbox_heads):
            stds = self.stages[t]["bbox_stds"]
            targets = self.sample(boxes, valid, batch, self.matchers[t], stds)
            cls_logits, deltas = head(self._pool("box", features, targets.rois, semantic_features))
            refined = refine_boxes(cls_logits, deltas, targets.rois, sizes, self.num_classes, stds)
            results.append((targets, cls_logits, deltas, refined))
            boxes, valid = refined, targets.valid
        return results

    def _mask_loss(self, stage, features, targets, batch, semantic_features):
        positives = self.positives(targets)
        pooled = self._pool("mask", features, positives.rois, semantic_features)
        return mask_head.mask_loss(self.mask_logits(stage, pooled), mask_targets(self.mask, batch, positives, self.impl),
                                   positives.labels, positives.weights)

    def losses(self, features, proposals, batch):
        out = {}
        semantic_logits, semantic_features = self._semantic(features)
        if semantic_logits is not None:
            if "semantic" not in batch:
                raise ValueError("HTC with the semantic branch needs batch['semantic'] [B, H, W] (255 = ignore); "
                                 "set model.htc.semantic = False for data without semantic maps.")
            out["semantic"] = htc_heads.semantic_loss(semantic_logits, batch["semantic"],
                                                      weight=self.htc.semantic_loss_weight)
        for t, (targets, cls_logits, deltas, refined) in enumerate(
                self.stage_targets(features, proposals, batch, semantic_features)):
            weight = self.stages[t]["loss_weight"]
            out.update({f"s{t + 1}_{k}": weight * v for k, v in self.box_losses(cls_logits, deltas, targets).items()})
            if self.mask is not None:
                # HTC interleaves: the mask branch samples from the boxes this stage just refined.
                if self.htc and self.htc.interleaved:
                    targets = self.sample(refined, targets.valid, batch, self.matchers[t], self.stages[t]["bbox_stds"])
                out[f"s{t + 1}_mask"] = weight * self._mask_loss(t, features, targets, batch, semantic_features)
        return out

    # Inference ---------------------------------------------------------------------------------------
    def detect(self, features, proposals, image_sizes):
        _, semantic_features = self._semantic(features)
        rois, logits_sum = proposals.boxes, 0.0
        last = len(self.bbox_heads) - 1
        for t, head in enumerate(self.bbox_heads):
            cls_logits, deltas = head(self._pool("box", features, rois, semantic_features))
            logits_sum += cls_logits
            if t < last:
                rois = refine_boxes(cls_logits, deltas, rois, image_sizes, self.num_classes,
                                    self.stages[t]["bbox_stds"])
        dets = self.detections(logits_sum / len(self.bbox_heads), deltas, rois, proposals.valid, image_sizes,
                               self.stages[last]["bbox_stds"])
        out = detection_outputs(dets)
        if self.mask is not None:
            pooled = self._pool("mask", features, dets.boxes, semantic_features)
            if self.htc and self.htc.mask_test == "last":
                out["detection_masks"] = mask_head.mask_probabilities(self.mask_logits(last, pooled), dets.classes)
            else:  # Cascade Mask R-CNN; HTC with mask_test "mean"
                probs = [mask_head.mask_probabilities(logits, dets.classes) for logits in self.stage_mask_logits(pooled)]
                out["detection_masks"] = tf.add_n(probs) / len(probs)
        return out


@ROI_HEADS.register("htc")
class HybridTaskCascadeRoIHead(CascadeRoIHead):
    """HTC: the cascade with interleaved mask branches, mask information flow and the semantic branch
    (model.htc); needs model.mask."""

    DEFAULTS = {**CascadeRoIHead.DEFAULTS, "type": "htc"}
    model_blocks = ("roi", "cascade", "mask", "htc")

    def __init__(self, config, num_classes, impl=None):
        self.htc = block_options(config.get("htc"), HTC_DEFAULTS, "model.htc")
        for key, choices in HTC_CHOICES.items():
            if self.htc[key] not in choices:
                raise ValueError(f"model.htc.{key} must be one of {list(choices)}, got {self.htc[key]!r}.")
        if config.get("mask") is None:
            raise ValueError("model.roi.type 'htc' needs a model.mask block (HTC's mask branch).")
        super().__init__(config, num_classes, impl)
        if self.htc.semantic_pool == "14_avg" and self.roi.pooled_size != 7:
            raise ValueError(f"model.htc.semantic_pool '14_avg' pools the semantic features 14x14 for a 7x7 box "
                             f"branch: it needs model.roi.pooled_size 7, got {self.roi.pooled_size} (or use "
                             f"semantic_pool 'direct').")
