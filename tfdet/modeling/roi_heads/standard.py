"""The standard RoI head (Faster / Mask / Keypoint R-CNN): a box branch and optional mask and keypoint
branches on FPN features, as a spec chosen by `model.roi.type` ("standard").

A RoI head spec is a plain object built from the model config; it owns its layers and the detector
keeps them as attributes under the names in `layers` (those names are checkpoint keys). Its interface:
  losses(features, proposals, batch) -> {name: scalar}   (features: {level: map}; proposals: Proposals)
  detect(features, proposals, image_sizes) -> outputs dict (tfdet.modeling.batch)

Blocks (defaults below, unknown keys refused):
  model.roi       pooler (levels, pooled_size, sampling_ratio, aligned), box_head {type, options},
                  class_agnostic, bbox_stds (box coder), losses, R-CNN matching / sampling, test settings
  model.mask      present = a mask branch: pooler, the FCN mask head's options, targets
  model.keypoint  present = a keypoint branch: pooler, the keypoint head's options, loss weight
The mask and keypoint branches train on the sampled positives (tfdet.modeling.roi_heads.bbox_head
`leading_positives`) and run at inference on the detected boxes.
"""

import logging

import keras
import tensorflow as tf

from tfdet.layers.roi_align import MultiLevelRoIAlign
from tfdet.modeling.batch import detection_outputs
from tfdet.modeling.registry import BOX_HEADS, ROI_HEADS, as_dict, block_options, construct, constructor_defaults
from tfdet.modeling.roi_heads import bbox_head, keypoint_head, mask_head
from tfdet.ops.legacy import box_decoder, check_convention
from tfdet.ops.matching import MaxIoUMatcher

log = logging.getLogger(__name__)

POOLER_DEFAULTS = dict(sampling_ratio=0, aligned=True)

ROI_DEFAULTS = dict(
    type="standard", levels=(2, 3, 4, 5), pooled_size=7, **POOLER_DEFAULTS,
    box_head=dict(type="ConvFC", **constructor_defaults(bbox_head.BBoxHead, skip=("num_classes", "class_agnostic"))),
    class_agnostic=False, bbox_stds=bbox_head.BBOX_STDS, loss_box="l1", smooth_l1_beta=1.0,
    pos_iou=0.5, neg_iou=0.5, num_samples=512, positive_fraction=0.25,
    score_threshold=0.05, nms_iou=0.5, max_detections=100, nms_method="hard", soft_nms_sigma=0.5,
    min_box_size=0.0,            # boxes with a side < this dropped before NMS (torchvision 1e-2)
    box_coder_clip_below=True,   # False: dw, dh clamped from above only (torchvision)
    box_convention="current")    # "legacy_v1": mmdetection 1.x box coder (+1 widths; tfdet.ops.legacy)

MASK_DEFAULTS = dict(
    pooled_size=14, **POOLER_DEFAULTS, **constructor_defaults(mask_head.MaskHead, skip=("num_classes", "impl")),
    threshold=0.5,     # pasted probabilities >= threshold are foreground
    paste="detectron2",  # how masks are pasted into images: "detectron2" or "torchvision" (mask_head.paste_masks)
    gt_masks="box")    # tfdet.data.pipeline's masks cropped to their gt box; "image" for full-image bitmaps

KEYPOINT_DEFAULTS = dict(pooled_size=14, **POOLER_DEFAULTS, **constructor_defaults(keypoint_head.KeypointHead),
                         loss_weight=1.0,
                         decode="cell_center")  # heatmaps to points: "cell_center" | "torchvision" (bicubic)


def roi_block(block, defaults, where="model.roi"):
    """The roi block over `defaults`. A block written before box heads had their own block (a top-level
    `fc_dim`) is read as box_head.fc_dim."""
    block = as_dict(block)
    if "fc_dim" in block:
        log.warning("%s.fc_dim is now %s.box_head.fc_dim; reading it from there.", where, where)
        block["box_head"] = {**as_dict(block.get("box_head", defaults["box_head"])), "fc_dim": block.pop("fc_dim")}
    return block_options(block, defaults, where)


def optional_block(config, name, defaults):
    """The model block `name` over `defaults`, or None when the config has no such block (no branch)."""
    block = config.get(name)
    return None if block is None else block_options(block, defaults, f"model.{name}")


def pooler(block, levels, name, impl=None):
    """The multi-level RoIAlign of a branch: block.pooled_size, sampling_ratio, aligned on FPN levels."""
    return MultiLevelRoIAlign(block.pooled_size, min_level=levels[0], max_level=levels[-1],
                              sampling_ratio=block.sampling_ratio, aligned=block.aligned, impl=impl, name=name)


def build_box_head(roi, num_classes, name):
    """The box head of roi.box_head (type from BOX_HEADS; the other keys are its constructor's options)."""
    options = as_dict(roi.box_head)
    return construct(BOX_HEADS.get(options.pop("type", "ConvFC")), "model.roi.box_head", num_classes,
                     class_agnostic=roi.class_agnostic, name=name, **options)


def rcnn_matcher(pos_iou, neg_iou):
    """R-CNN matching: positives at IoU >= pos_iou (no low-quality matches), negatives below neg_iou."""
    return MaxIoUMatcher(pos_iou, neg_iou, min_pos_iou=pos_iou, match_low_quality=False)


def is_layers(value):
    """A Keras layer or a non-empty list of them."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, keras.layers.Layer) for v in value)
    return isinstance(value, keras.layers.Layer)


def mask_targets(mask, batch, positives, impl=None):
    """Mask targets [B, P, 2S, 2S] of the positives, from batch["gt_masks"] laid out as mask.gt_masks."""
    if mask.gt_masks not in ("box", "image"):
        raise ValueError(f"model.mask.gt_masks must be 'box' or 'image', got {mask.gt_masks!r}.")
    gt_boxes = tf.cast(batch["gt_boxes"], tf.float32)
    return mask_head.mask_targets(batch["gt_masks"], positives.rois, positives.matched_gt, 2 * mask.pooled_size,
                                  gt_boxes=gt_boxes if mask.gt_masks == "box" else None, impl=impl)


class RoIHead:
    """What every RoI head spec shares: its roi and mask blocks, R-CNN sampling, the box losses, the
    positives for the mask branch, the box detections, and `layers`."""

    DEFAULTS = ROI_DEFAULTS
    model_blocks = ("roi", "mask")   # the model config blocks the spec reads

    def __init__(self, config, num_classes, impl=None):
        self.num_classes, self.impl = int(num_classes), impl
        self.roi = roi_block(config.get("roi"), self.DEFAULTS)
        check_convention(self.roi.box_convention, "model.roi.box_convention")
        box_decoder(self.roi.box_convention, self.roi.box_coder_clip_below)  # refuses a combination it cannot run
        self.mask = optional_block(config, "mask", MASK_DEFAULTS)

    @property
    def layers(self):
        """{attribute name: layer or list of layers} of this head: the detector keeps them under these
        names (checkpoint keys)."""
        return {name: value for name, value in vars(self).items() if is_layers(value)}

    # Training ----------------------------------------------------------------------------------------
    def sample(self, proposals, valid, batch, matcher, stds):
        """RoiTargets of the R-CNN sampler on [B, P, 4] boxes (ground truth appended)."""
        r = self.roi
        return bbox_head.sample_rois(proposals, valid, batch["gt_boxes"], batch["gt_classes"], self.num_classes,
                                     gt_is_crowd=batch.get("gt_is_crowd"), matcher=matcher,
                                     num_samples=r.num_samples, positive_fraction=r.positive_fraction, stds=stds,
                                     convention=r.box_convention)

    def box_losses(self, cls_logits, deltas, targets):
        return bbox_head.bbox_losses(cls_logits, deltas, targets, self.num_classes, loss_box=self.roi.loss_box,
                                     beta=self.roi.smooth_l1_beta)

    def positives(self, targets):
        return bbox_head.leading_positives(targets, self.roi.num_samples, self.roi.positive_fraction)

    def detections(self, cls_logits, deltas, rois, roi_valid, image_sizes, stds=None):
        """The box head's final detections (nms.Detections) with the roi block's test settings."""
        r = self.roi
        return bbox_head.bbox_detections(cls_logits, deltas, rois, roi_valid, image_sizes, self.num_classes,
                                         stds=r.bbox_stds if stds is None else stds,
                                         score_threshold=r.score_threshold, nms_iou=r.nms_iou,
                                         max_detections=r.max_detections, nms_method=r.nms_method,
                                         soft_nms_sigma=r.soft_nms_sigma, min_box_size=r.min_box_size,
                                         clip_below=r.box_coder_clip_below, convention=r.box_convention)


@ROI_HEADS.register("standard")
class StandardRoIHead(RoIHead):
    """Box branch (+ mask branch with model.mask, + keypoint branch with model.keypoint)."""

    model_blocks = ("roi", "mask", "keypoint")

    def __init__(self, config, num_classes, impl=None):
        super().__init__(config, num_classes, impl)
        roi = self.roi
        self.keypoint = optional_block(config, "keypoint", KEYPOINT_DEFAULTS)
        self.matcher = rcnn_matcher(roi.pos_iou, roi.neg_iou)
        self.box_roi_align = pooler(roi, roi.levels, "box_roi_align", impl)
        self.bbox_head = build_box_head(roi, num_classes, "bbox_head")
        if self.mask is not None:
            m = self.mask
            self.mask_roi_align = pooler(m, roi.levels, "mask_roi_align", impl)
            self.mask_head = mask_head.MaskHead(num_classes, m.num_convs, m.channels, upsample=m.upsample,
                                                class_agnostic=m.class_agnostic, norm=m.norm, impl=impl,
                                                name="mask_head")
        if self.keypoint is not None:
            k = self.keypoint
            self.keypoint_roi_align = pooler(k, roi.levels, "keypoint_roi_align", impl)
            self.keypoint_head = keypoint_head.KeypointHead(k.num_keypoints, k.num_convs, k.channels,
                                                            name="keypoint_head")

    def losses(self, features, proposals, batch):
        targets = self.sample(proposals.boxes, proposals.valid, batch, self.matcher, self.roi.bbox_stds)
        cls_logits, deltas = self.bbox_head(self.box_roi_align(features, targets.rois))
        out = self.box_losses(cls_logits, deltas, targets)
        positives = self.positives(targets)
        if self.mask is not None:
            logits = self.mask_head(self.mask_roi_align(features, positives.rois))
            out["mask"] = mask_head.mask_loss(logits, mask_targets(self.mask, batch, positives, self.impl),
                                              positives.labels, positives.weights)
        if self.keypoint is not None:
            heatmaps = self.keypoint_head(self.keypoint_roi_align(features, positives.rois))
            targets = keypoint_head.keypoint_targets(batch["gt_keypoints"], positives.rois, positives.matched_gt,
                                                     heatmaps.shape[2])
            out["keypoint"] = self.keypoint.loss_weight * keypoint_head.keypoint_loss(heatmaps, targets)
        return out

    # Inference ---------------------------------------------------------------------------------------
    def detect(self, features, proposals, image_sizes):
        cls_logits, deltas = self.bbox_head(self.box_roi_align(features, proposals.boxes))
        dets = self.detections(cls_logits, deltas, proposals.boxes, proposals.valid, image_sizes)
        out = detection_outputs(dets)
        if self.mask is not None:
            logits = self.mask_head(self.mask_roi_align(features, dets.boxes))
            out["detection_masks"] = mask_head.mask_probabilities(logits, dets.classes)
        if self.keypoint is not None:
            heatmaps = self.keypoint_head(self.keypoint_roi_align(features, dets.boxes))
            points = keypoint_head.decode_keypoints(heatmaps, dets.boxes, self.keypoint.decode)
            out["detection_keypoints"] = tf.where((dets.classes >= 0)[..., None, None], points, 0.0)
        return out
