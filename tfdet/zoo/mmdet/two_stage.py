"""Faster R-CNN, Mask R-CNN and the RPN detector (mmdetection FasterRCNN / MaskRCNN / RPN with ResNet or
ResNeXt + FPN, RPNHead, StandardRoIHead with a Shared2FCBBoxHead and an FCNMaskHead)."""

from tfdet.zoo.mmdet import carafe, common
from tfdet.zoo.mmdet.registry import Family, register_family

# mmdetection's configs (configs/_base_/models/faster-rcnn_r50_fpn.py, mask-rcnn_r50_fpn.py, rpn_r50_fpn.py)
RPN_TEST = dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)
RCNN_TEST = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
NUM_CLASSES = 80


def fpn_neck():
    return dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5)


def rpn_head():
    return dict(type="RPNHead", in_channels=256, feat_channels=256,
                anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                      strides=[4, 8, 16, 32, 64]),
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4))


def roi_head(with_mask, num_classes=NUM_CLASSES):
    head = dict(type="StandardRoIHead",
                bbox_roi_extractor=dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=7,
                                                                                  sampling_ratio=0),
                                        out_channels=256, featmap_strides=[4, 8, 16, 32]),
                bbox_head=dict(type="Shared2FCBBoxHead", in_channels=256, fc_out_channels=1024, roi_feat_size=7,
                               num_classes=num_classes,
                               bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                               target_stds=[0.1, 0.1, 0.2, 0.2]),
                               reg_class_agnostic=False))
    if with_mask:
        head.update(mask_roi_extractor=dict(type="SingleRoIExtractor",
                                            roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
                                            out_channels=256, featmap_strides=[4, 8, 16, 32]),
                    mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=256, conv_out_channels=256,
                                   num_classes=num_classes))
    return head


def two_stage_model(arch, with_mask):
    rcnn = dict(RCNN_TEST, **(dict(mask_thr_binary=0.5) if with_mask else {}))
    return dict(type="MaskRCNN" if with_mask else "FasterRCNN", backbone=arch.backbone(), neck=fpn_neck(),
                rpn_head=rpn_head(), roi_head=roi_head(with_mask), test_cfg=dict(rpn=dict(RPN_TEST), rcnn=rcnn))


def levels_of(spec):
    """(backbone levels, all neck levels) of a spec's FPN."""
    levels, extra, _, _ = common.fpn_levels(spec["model"]["neck"])
    return levels, levels + extra


def base_blocks(spec):
    """backbone, neck and rpn blocks of a two-stage (or RPN) spec."""
    model = spec["model"]
    inputs, levels = levels_of(spec)
    return dict(backbone=common.backbone_block(model["backbone"], inputs), neck=common.fpn_block(model["neck"]),
                rpn=common.rpn_block(model["rpn_head"], (model.get("test_cfg") or {}).get("rpn"), levels))


def base_params(spec, table):
    model = spec["model"]
    common.backbone_params(table, model["backbone"], spec["input"]["bgr"])
    common.fpn_params(table, model["neck"])


def roi_block(roi, test_rcnn, what="roi_head"):
    """tfdet's model.roi block for an mmdet StandardRoIHead-like dict (box branch) and test_cfg.rcnn."""
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.roi_heads.standard import ROI_DEFAULTS  # pylint: disable=import-outside-toplevel

    sampling_ratio, aligned = common.roi_extractor(roi.get("bbox_roi_extractor"), 7, f"{what}.bbox_roi_extractor")
    _, size, fc, agnostic, stds = common.shared2fc_settings(roi["bbox_head"], f"{what}.bbox_head")
    test_rcnn = test_rcnn or {}
    block = with_defaults(ROI_DEFAULTS, levels=(2, 3, 4, 5), pooled_size=size, sampling_ratio=sampling_ratio,
                          aligned=aligned, class_agnostic=agnostic, bbox_stds=stds,
                          box_convention=common.coder_convention(roi["bbox_head"].get("bbox_coder")),
                          score_threshold=float(test_rcnn.get("score_thr", 0.05)),
                          nms_iou=common.nms_iou({"nms": {"iou_threshold": 0.5}, **test_rcnn}, "test_cfg.rcnn"),
                          max_detections=int(test_rcnn.get("max_per_img", 100)),
                          box_head=dict(fc_dim=fc, num_fcs=2, num_convs=0))
    block.pop("type")
    return block


def mask_block(roi, test_rcnn, what="roi_head"):
    """tfdet's model.mask block for an mmdet FCNMaskHead (in roi[\"mask_head\"]) and test_cfg.rcnn."""
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.roi_heads.standard import MASK_DEFAULTS  # pylint: disable=import-outside-toplevel

    sampling_ratio, aligned = common.roi_extractor(roi.get("mask_roi_extractor"), 14, f"{what}.mask_roi_extractor")
    mask_head = roi["mask_head"][0] if isinstance(roi["mask_head"], (list, tuple)) else roi["mask_head"]
    num_convs, _, channels, agnostic = common.fcn_mask_settings(mask_head, f"{what}.mask_head")
    return with_defaults(MASK_DEFAULTS, pooled_size=14, sampling_ratio=sampling_ratio, aligned=aligned,
                         num_convs=num_convs, channels=channels,
                         upsample=carafe.mask_upsample(mask_head, f"{what}.mask_head"), class_agnostic=agnostic,
                         threshold=float((test_rcnn or {}).get("mask_thr_binary", 0.5)), paste="detectron2")


def _with_mask(model):
    return bool((model.get("roi_head") or {}).get("mask_head"))


def _standard(model, detector_types, with_mask):
    roi = model.get("roi_head") or {}
    return (model.get("type") in detector_types and (model.get("rpn_head") or {}).get("type") == "RPNHead"
            and roi.get("type", "StandardRoIHead") == "StandardRoIHead" and _with_mask(model) == with_mask)


def two_stage_tfdet_model(spec, num_classes):
    model = spec["model"]
    test = model.get("test_cfg") or {}
    out = dict(type="MaskRCNN" if _with_mask(model) else "FasterRCNN", num_classes=num_classes, **base_blocks(spec),
               roi=roi_block(model["roi_head"], test.get("rcnn")))
    if _with_mask(model):
        out["mask"] = mask_block(model["roi_head"], test.get("rcnn"))
    return out


def two_stage_params(spec, num_classes):
    model, table = spec["model"], {}
    base_params(spec, table)
    common.rpn_params(table, model["rpn_head"])
    common.shared2fc_params(table, model["roi_head"]["bbox_head"], num_classes)
    if _with_mask(model):
        common.fcn_mask_params(table, model["roi_head"]["mask_head"], num_classes)
    return table


def box_head_classes(state_dict, key="roi_head.bbox_head.fc_cls.bias"):
    """Object classes of a softmax box classifier (its rows less the background)."""
    value = state_dict.get(key)
    return int(value.shape[0]) - 1 if value is not None and value.ndim == 1 and value.shape[0] >= 2 else None


CLASS_LAYERS = ("bbox_head/cls/", "bbox_head/reg/", "mask_head/logits/")

for _name, _with in (("faster_rcnn", False), ("mask_rcnn", True)):
    register_family(Family(
        name=_name,
        matches=lambda model, w=_with: _standard(model, ("FasterRCNN", "MaskRCNN", "TwoStageDetector"), w),
        mmdet_model=lambda arch, w=_with: carafe.with_carafe(two_stage_model(arch, w), arch),
        tfdet_model=two_stage_tfdet_model, params=two_stage_params, source_classes=box_head_classes,
        class_layers=CLASS_LAYERS, arch_flags=("carafe",), model_flags=carafe.model_flags))


# -- RPN --------------------------------------------------------------------------------------------------------

def rpn_model(arch):
    return dict(type="RPN", backbone=arch.backbone(), neck=fpn_neck(), rpn_head=rpn_head(),
                test_cfg=dict(rpn=dict(RPN_TEST, nms_pre=2000)))


def rpn_tfdet_model(spec, num_classes):
    return dict(type="RPN", num_classes=num_classes, **base_blocks(spec))


def rpn_params(spec, num_classes):
    table = {}
    base_params(spec, table)
    common.rpn_params(table, spec["model"]["rpn_head"])
    return table


register_family(Family(
    name="rpn",
    matches=lambda model: model.get("type") == "RPN" and (model.get("rpn_head") or {}).get("type") == "RPNHead",
    mmdet_model=rpn_model, tfdet_model=rpn_tfdet_model, params=rpn_params, source_classes=lambda sd: 1,
    rpn_detector=True))
