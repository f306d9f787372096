"""Cascade R-CNN, Cascade Mask R-CNN and HTC (mmdetection CascadeRCNN / HybridTaskCascade with ResNet or
ResNeXt + FPN, RPNHead, a CascadeRoIHead / HybridTaskCascadeRoIHead of 3 Shared2FC box stages, FCN / HTC
mask heads per stage and HTC's FusedSemanticHead); tools/zoo_reference/mmdet_conventions.md 2.9, 2.11.

Keys: roi_head.bbox_head.{t} -> bbox_head{t+1}, roi_head.mask_head.{t} -> mask_head{t+1} (HTC:
.conv_res.conv -> mask_head{t+1}/flow), roi_head.semantic_head.{lateral_convs.i, convs.i, conv_embedding,
conv_logits} -> semantic_head/{lateral{level}, conv{i+1}, embedding, logits}.
HTC's config: model.htc with mmdetection's arithmetic (semantic_fusion "resize_then_conv", semantic_pool
"14_avg", flow_activation "relu") and mask_test by the mmdet version that wrote the checkpoint: "mean" for
2.x files (the zoo's published mask AP), "last" for 3.x files (and files without a version: mmdet 3.x's
code, the fixtures' reference)."""

from tfdet.zoo.mmdet import carafe, common, two_stage
from tfdet.zoo.mmdet.registry import Family, register_family

# mmdetection configs/_base_/models/cascade-rcnn_r50_fpn.py, cascade-mask-rcnn_r50_fpn.py, configs/htc/.
STAGE_STDS = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
STAGE_LOSS_WEIGHTS = [1, 0.5, 0.25]
STAGE_IOUS = (0.5, 0.6, 0.7)  # train_cfg's (not in the spec: training only)
HTC_SCORE_THR = 0.001
ROI_TYPES = {"CascadeRCNN": "CascadeRoIHead", "HybridTaskCascade": "HybridTaskCascadeRoIHead"}


def _box_head(stds):
    return dict(type="Shared2FCBBoxHead", in_channels=256, fc_out_channels=1024, roi_feat_size=7,
                num_classes=two_stage.NUM_CLASSES, reg_class_agnostic=True,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds)))


def cascade_model(arch, kind):
    """The mmdet model dict of a cascade_rcnn / cascade_mask_rcnn / htc arch name."""
    with_mask, htc = kind != "cascade_rcnn", kind == "htc"
    base = two_stage.roi_head(with_mask)
    roi = dict(type=ROI_TYPES["HybridTaskCascade" if htc else "CascadeRCNN"], num_stages=3,
               stage_loss_weights=list(STAGE_LOSS_WEIGHTS), bbox_roi_extractor=base["bbox_roi_extractor"],
               bbox_head=[_box_head(stds) for stds in STAGE_STDS])
    if with_mask:
        roi.update(mask_roi_extractor=base["mask_roi_extractor"], mask_head=base["mask_head"])
    if htc:
        roi.update(interleaved=True, mask_info_flow=True,
                   mask_head=[dict(base["mask_head"], type="HTCMaskHead", with_conv_res=t > 0) for t in range(3)],
                   semantic_roi_extractor=dict(type="SingleRoIExtractor", out_channels=256, featmap_strides=[8],
                                               roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0)),
                   semantic_head=dict(type="FusedSemanticHead", num_ins=5, fusion_level=1, num_convs=4,
                                      in_channels=256, conv_out_channels=256, num_classes=183))
    rcnn = dict(two_stage.RCNN_TEST, **(dict(score_thr=HTC_SCORE_THR) if htc else {}),
                **(dict(mask_thr_binary=0.5) if with_mask else {}))
    return dict(type="HybridTaskCascade" if htc else "CascadeRCNN", backbone=arch.backbone(),
                neck=two_stage.fpn_neck(), rpn_head=two_stage.rpn_head(), roi_head=roi,
                test_cfg=dict(rpn=dict(two_stage.RPN_TEST), rcnn=rcnn))


def _matches(model, kind):
    detector = "HybridTaskCascade" if kind == "htc" else "CascadeRCNN"
    roi = model.get("roi_head") or {}
    return (model.get("type") == detector and roi.get("type") == ROI_TYPES[detector]
            and (model.get("rpn_head") or {}).get("type") == "RPNHead"
            and (kind == "htc" or bool(roi.get("mask_head")) == (kind == "cascade_mask_rcnn")))


def per_stage(roi, key):
    """roi_head[key] as a list of one dict per stage (mmdet replicates a single dict)."""
    stages = int(roi.get("num_stages", 3))
    value = roi[key]
    value = list(value) if isinstance(value, (list, tuple)) else [value] * stages
    if len(value) != stages:
        raise common.UnsupportedError(f"roi_head.{key}: {len(value)} entries for num_stages={stages}.")
    return value


def _box_heads(roi):
    """The stages' box head dicts (all alike but for their stds) and their stds."""
    heads = per_stage(roi, "bbox_head")
    settings = [common.shared2fc_settings(h, f"roi_head.bbox_head.{t}") for t, h in enumerate(heads)]
    if len({s[:4] for s in settings}) != 1:
        raise common.UnsupportedError("roi_head.bbox_head: the stages' heads differ in in_channels / roi_feat_size / "
                                      "fc_out_channels / reg_class_agnostic (tfdet builds them alike).")
    return heads, [list(s[4]) for s in settings]


def _mask_heads(roi, htc):
    """The stages' mask heads as FCNMaskHead dicts (HTC's checked for mask information flow)."""
    heads = per_stage(roi, "mask_head")
    out = []
    flow = bool(roi.get("mask_info_flow", True))
    for t, head in enumerate(heads):
        what = f"roi_head.mask_head.{t}"
        if htc:
            common.require(head.get("type"), ("HTCMaskHead",), f"{what}.type")
            common.require(bool(head.get("with_conv_res", True)), (flow and t > 0,), f"{what}.with_conv_res")
            head = {k: v for k, v in head.items() if k != "with_conv_res"}
            head["type"] = "FCNMaskHead"
        common.fcn_mask_settings(head, what)
        out.append(head)
    if len({tuple(sorted((k, str(v)) for k, v in h.items())) for h in out}) != 1:
        raise common.UnsupportedError("roi_head.mask_head: the stages' heads differ (tfdet builds them alike).")
    return out


def mask_test_of(spec):
    """HTC's test-time mask rule for the mmdet version that wrote the checkpoint (module docstring)."""
    version = str(spec.get("mmdet_version") or "")
    return "mean" if version.startswith(("1.", "2.")) else "last"


def _semantic(spec, levels):
    """(htc block fields, semantic head dict) of an HTC spec's semantic branch (or ({"semantic": False}, None))."""
    roi = spec["model"]["roi_head"]
    head = roi.get("semantic_head")
    if not head:
        return dict(semantic=False), None
    what = "roi_head.semantic_head"
    common.require(head.get("type"), ("FusedSemanticHead",), f"{what}.type")
    common.require(int(head.get("num_ins", len(levels))), (len(levels),), f"{what}.num_ins")
    channels = int(spec["model"]["neck"].get("out_channels", 256))
    common.require(int(head.get("in_channels", 256)), (channels,), f"{what}.in_channels")
    common.require(int(head.get("conv_out_channels", 256)), (channels,), f"{what}.conv_out_channels")
    common.require(tuple(roi.get("semantic_fusion", ("bbox", "mask"))), (("bbox", "mask"),),
                   "roi_head.semantic_fusion")
    fusion_level = levels[0] + int(head.get("fusion_level", 1))
    extractor = roi.get("semantic_roi_extractor") or {}
    common.require(tuple(extractor.get("featmap_strides", (8,))), ((2 ** fusion_level,),),
                   "roi_head.semantic_roi_extractor.featmap_strides")
    # RoIAlign 14x14, sampling ratio 0, aligned (its one stride checked above; finest_scale is moot on one level)
    common.roi_extractor({**extractor, "featmap_strides": (4, 8, 16, 32), "finest_scale": 56}, 14,
                         "roi_head.semantic_roi_extractor")
    fields = dict(semantic=True, semantic_classes=int(head.get("num_classes", 183)), fusion_level=fusion_level,
                  semantic_convs=int(head.get("num_convs", 4)), semantic_fusion="resize_then_conv",
                  semantic_pool="14_avg")
    return fields, head


def tfdet_model(spec, num_classes):
    model = spec["model"]
    roi, test = model["roi_head"], model.get("test_cfg") or {}
    htc = model["type"] == "HybridTaskCascade"
    heads, stds = _box_heads(roi)
    weights = roi.get("stage_loss_weights", STAGE_LOSS_WEIGHTS)
    roi_block = two_stage.roi_block({**roi, "bbox_head": heads[0]}, test.get("rcnn"))
    out = dict(type="HybridTaskCascade" if htc else ("CascadeMaskRCNN" if roi.get("mask_head") else "CascadeRCNN"),
               num_classes=num_classes, **two_stage.base_blocks(spec), roi=roi_block,
               cascade=dict(stages=[dict(pos_iou=iou, bbox_stds=tuple(s), loss_weight=float(w))
                                    for iou, s, w in zip(STAGE_IOUS, stds, weights)]))
    if roi.get("mask_head"):
        masks = _mask_heads(roi, htc)
        out["mask"] = two_stage.mask_block({**roi, "mask_head": masks[0]}, test.get("rcnn"))
    if htc:
        _, levels = two_stage.levels_of(spec)
        semantic, _ = _semantic(spec, levels)
        out["htc"] = dict(semantic, mask_info_flow=bool(roi.get("mask_info_flow", True)),
                          interleaved=bool(roi.get("interleaved", True)), flow_activation="relu",
                          mask_test=mask_test_of(spec))
    return out


def params(spec, num_classes):
    model, table = spec["model"], {}
    roi = model["roi_head"]
    htc = model["type"] == "HybridTaskCascade"
    two_stage.base_params(spec, table)
    common.rpn_params(table, model["rpn_head"])
    heads, _ = _box_heads(roi)
    for t, head in enumerate(heads):
        common.shared2fc_params(table, head, num_classes, key=f"roi_head.bbox_head.{t}", path=f"bbox_head{t + 1}")
    if roi.get("mask_head"):
        flow = htc and bool(roi.get("mask_info_flow", True))
        for t, head in enumerate(_mask_heads(roi, htc)):
            key, path = f"roi_head.mask_head.{t}", f"mask_head{t + 1}"
            common.fcn_mask_params(table, head, num_classes, key=key, path=path)
            if flow and t > 0:
                channels = int(head.get("conv_out_channels", 256))
                common.conv(table, f"{key}.conv_res.conv", f"{path}/flow", int(head.get("in_channels", 256)),
                            channels, 1)
    if htc:
        _, levels = two_stage.levels_of(spec)
        fields, head = _semantic(spec, levels)
        if head is not None:
            key, channels = "roi_head.semantic_head", int(head.get("conv_out_channels", 256))
            for i, level in enumerate(levels):
                common.conv(table, f"{key}.lateral_convs.{i}.conv", f"semantic_head/lateral{level}", channels,
                            int(head.get("in_channels", 256)), 1)
            for i in range(fields["semantic_convs"]):
                common.conv(table, f"{key}.convs.{i}.conv", f"semantic_head/conv{i + 1}", channels, channels, 3)
            common.conv(table, f"{key}.conv_embedding.conv", "semantic_head/embedding", channels, channels, 1)
            common.conv(table, f"{key}.conv_logits", "semantic_head/logits", fields["semantic_classes"], channels, 1)
    return table


def _class_layers(with_mask):
    return tuple(f"bbox_head{t}/cls/" for t in (1, 2, 3)) + tuple(f"bbox_head{t}/reg/" for t in (1, 2, 3)) + \
        (tuple(f"mask_head{t}/logits/" for t in (1, 2, 3)) if with_mask else ())


for _kind in ("cascade_rcnn", "cascade_mask_rcnn", "htc"):
    register_family(Family(
        name=_kind, matches=lambda model, k=_kind: _matches(model, k),
        mmdet_model=lambda arch, k=_kind: carafe.with_carafe(cascade_model(arch, k), arch), tfdet_model=tfdet_model,
        params=params, source_classes=lambda sd: two_stage.box_head_classes(sd, "roi_head.bbox_head.0.fc_cls.bias"),
        class_layers=_class_layers(_kind != "cascade_rcnn"), arch_flags=("carafe",), model_flags=carafe.model_flags,
        versioned=_kind == "htc"))
