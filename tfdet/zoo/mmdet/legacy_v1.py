"""mmdetection 1.x checkpoints (tools/zoo_reference/mmdet_conventions.md 1.2): recognised, their weights moved
to the 2.x layout, their model described as mmdetection 2.x / 3.x runs them (configs/legacy_1.x).

A file is 1.x when its meta's mmdet_version is below 2, or (without a version) when its keys have the 1.x
two-stage layout: box / mask heads at the top level (`bbox_head.`) next to `rpn_head.`, no `roi_head.`.
A 1.x RetinaNet has the keys of a 2.x one: without meta["mmdet_version"] it cannot be told apart.

The model: the 1.x config text's model (meta["config"]) translated to mmdetection 2.x field names, or
without a config the arch name's model; then the legacy_1.x settings: LegacyAnchorGenerator (centre offset
0.5) and LegacyDeltaXYWHBBoxCoder in the RPN / RetinaNet head and the box head, RoIAlign aligned=False
(1.x's RoIAlign had no aligned option) with the config's sample_num (legacy_1.x: 2). tfdet reproduces
them with model.rpn / retina / roi box_convention "legacy_v1" and roi / mask sampling_ratio, aligned.

The weights (`upgrade`; as mmdetection's tools/model_converters/upgrade_model_version.py): two-stage heads
under `roi_head.`; softmax classifiers (fc_cls) had the background as class 0: moved last; class-specific
fc_reg and conv_logits had a background entry first: dropped; RetinaNet's `cls_convs.N.weight` (mmdetection
<= 0.5.3) -> `cls_convs.N.conv.weight`; DCN `conv2_offset.*` -> `conv2.conv_offset.*` (mmcv's
_load_from_state_dict for version < 2). Sigmoid classifiers (rpn_cls, retina_cls) had no background channel
and are unchanged. (upgrade_model_version.py also rotates their bias vector by one entry, weights left
alone: a slip of that script, not a 1.x convention; tfdet keeps the checkpoint's bias.)

Covered: Faster R-CNN, Mask R-CNN, RetinaNet (ResNet / ResNeXt, FPN). Others raise UnsupportedError.
"""

import copy
import re

from tfdet.zoo.mmdet import common

FAMILIES_V1 = {"FasterRCNN": "faster_rcnn", "MaskRCNN": "mask_rcnn", "RetinaNet": "retinanet"}
LEGACY_SAMPLING_RATIO = 2  # configs/legacy_1.x RoIAlign (1.x configs' sample_num)
_HEADS = ("bbox_head.", "mask_head.", "semantic_head.", "grid_head.", "mask_iou_head.")


def version_major(meta):
    """The major version of meta["mmdet_version"] (e.g. "1.0rc0" -> 1), or None."""
    found = re.match(r"\s*(\d+)", str((meta or {}).get("mmdet_version", "")))
    return int(found.group(1)) if found else None


def is_v1(meta, state_dict=None):
    """True for an mmdetection 1.x checkpoint (its meta's version, else the 1.x two-stage key layout)."""
    major = version_major(meta)
    if major is not None:
        return major < 2
    keys = list(state_dict or ())
    return (any(k.startswith("rpn_head.") for k in keys) and any(k.startswith(_HEADS) for k in keys)
            and not any(k.startswith("roi_head.") for k in keys))


# -- The model --------------------------------------------------------------------------------------------------

def _unsupported_type(kind):
    return common.UnsupportedError(
        f"mmdetection 1.x checkpoints of {kind} are not supported: tfdet converts 1.x Faster R-CNN, Mask R-CNN and "
        "RetinaNet (ResNet / ResNeXt + FPN). Other 1.x models: convert with mmdetection 2.x "
        "(tools/model_converters/upgrade_model_version.py), then run them there with configs/legacy_1.x.")


def require_family(family):
    """UnsupportedError unless `family` (a registered family's name) has 1.x checkpoints tfdet converts."""
    if family not in FAMILIES_V1.values():
        raise _unsupported_type(family)


def _roi_extractor(extractor):
    layer = dict(extractor.get("roi_layer") or {})
    out = dict(type="RoIAlign", output_size=layer.get("out_size", layer.get("output_size", 7)),
               sampling_ratio=layer.get("sample_num", layer.get("sampling_ratio", LEGACY_SAMPLING_RATIO)),
               aligned=False)
    if layer.get("type", "RoIAlign") != "RoIAlign":
        out["type"] = layer["type"]  # refused by common.roi_extractor, naming it
    return dict(extractor, roi_layer=out)


def _coder(head):
    return dict(type="DeltaXYWHBBoxCoder", target_means=list(head.get("target_means", (0.0,) * 4)),
                target_stds=list(head.get("target_stds", (1.0,) * 4)))


def _nms(cfg, what):
    nms = dict(cfg.get("nms") or {})
    iou = nms.pop("iou_thr", nms.get("iou_threshold", cfg.get("nms_thr")))
    if iou is None:
        raise common.UnsupportedError(f"{what}: no nms iou_thr / nms_thr.")
    return dict(nms, type=nms.get("type", "nms"), iou_threshold=float(iou))


def _fpn(neck):
    neck = dict(neck)
    extra_on_inputs = neck.pop("extra_convs_on_inputs", True)
    if neck.get("add_extra_convs") is True:
        neck["add_extra_convs"] = "on_input" if extra_on_inputs else "on_output"
    return neck


def _backbone(backbone):
    backbone = dict(backbone)
    dcn = backbone.get("dcn")
    if dcn and "type" not in dcn:  # 1.x: dict(modulated=..., deformable_groups=..., fallback_on_stride=...)
        backbone["dcn"] = dict(type="DCNv2" if dcn.get("modulated") else "DCN",
                               deform_groups=int(dcn.get("deformable_groups", 1)),
                               fallback_on_stride=dcn.get("fallback_on_stride", False))
    return backbone


def _test_cfg(test, kind):
    """A 1.x top-level test_cfg in 2.x field names."""
    test = copy.deepcopy(test or {})
    if kind == "RetinaNet":
        return dict(test, nms=_nms(test, "test_cfg")) if test else {}
    out = {}
    rpn = test.get("rpn")
    if rpn:
        if int(rpn.get("nms_post", rpn.get("nms_pre", 1000))) < int(rpn.get("nms_pre", 1000)):
            raise common.UnsupportedError("test_cfg.rpn.nms_post < nms_pre (1.x's per-level cap after NMS) is not "
                                          "supported: mmdetection 2.x / 3.x keep every proposal of a level's NMS.")
        out["rpn"] = dict(nms_pre=rpn.get("nms_pre", 1000), max_per_img=rpn.get("max_num", 1000),
                          nms=_nms(rpn, "test_cfg.rpn"), min_bbox_size=rpn.get("min_bbox_size", 0))
        if rpn.get("nms_across_levels"):
            out["rpn"]["nms_across_levels"] = True  # refused by common.rpn_block, naming it
    rcnn = test.get("rcnn")
    if rcnn:
        out["rcnn"] = dict(rcnn, nms=_nms(rcnn, "test_cfg.rcnn"))
    return out


def translate(model, test_cfg=None):
    """A 1.x config's model dict (and its top-level test_cfg) in mmdetection 2.x field names, with the 2.x
    default types: as_legacy() then sets the legacy_1.x settings. num_classes there counts the background
    (1.x); here it does not."""
    kind = model.get("type")
    if kind not in FAMILIES_V1:
        raise _unsupported_type(kind)
    out = dict(type=kind, backbone=_backbone(model["backbone"]), neck=_fpn(model["neck"]))
    if kind == "RetinaNet":
        head = dict(model["bbox_head"])
        out["bbox_head"] = dict(type=head.get("type"), num_classes=int(head.get("num_classes", 81)) - 1,
                                in_channels=head.get("in_channels", 256), stacked_convs=head.get("stacked_convs", 4),
                                feat_channels=head.get("feat_channels", 256),
                                anchor_generator=dict(type="AnchorGenerator",
                                                      octave_base_scale=head.get("octave_base_scale", 4),
                                                      scales_per_octave=head.get("scales_per_octave", 3),
                                                      ratios=list(head.get("anchor_ratios", (0.5, 1.0, 2.0))),
                                                      strides=list(head.get("anchor_strides", (8, 16, 32, 64, 128)))),
                                bbox_coder=_coder(head))
        for field in ("conv_cfg", "norm_cfg"):
            if head.get(field):
                out["bbox_head"][field] = head[field]
        if head.get("anchor_base_sizes"):
            out["bbox_head"]["anchor_generator"]["base_sizes"] = head["anchor_base_sizes"]
    else:
        rpn = dict(model["rpn_head"])
        if not (rpn.get("loss_cls") or {}).get("use_sigmoid", True) or rpn.get("use_sigmoid_cls") is False:
            raise common.UnsupportedError("rpn_head: a softmax RPN (loss_cls.use_sigmoid=False) is not supported.")
        generator = dict(type="AnchorGenerator", scales=list(rpn.get("anchor_scales", (8,))),
                         ratios=list(rpn.get("anchor_ratios", (0.5, 1.0, 2.0))),
                         strides=list(rpn.get("anchor_strides", (4, 8, 16, 32, 64))))
        if rpn.get("anchor_base_sizes"):
            generator["base_sizes"] = rpn["anchor_base_sizes"]
        out["rpn_head"] = dict(type=rpn.get("type"), in_channels=rpn.get("in_channels", 256),
                               feat_channels=rpn.get("feat_channels", 256), anchor_generator=generator,
                               bbox_coder=_coder(rpn))
        box = dict(model["bbox_head"])
        kind_fc = box.get("type")
        if kind_fc in ("SharedFCBBoxHead", "ConvFCBBoxHead") and int(box.get("num_fcs", 2)) == 2 and \
                not any(int(box.get(f, 0)) for f in ("num_shared_convs", "num_cls_convs", "num_reg_convs",
                                                     "num_cls_fcs", "num_reg_fcs")):
            kind_fc = "Shared2FCBBoxHead"
        roi = dict(type="StandardRoIHead", bbox_roi_extractor=_roi_extractor(model["bbox_roi_extractor"]),
                   bbox_head=dict(type=kind_fc, in_channels=box.get("in_channels", 256),
                                  fc_out_channels=box.get("fc_out_channels", 1024),
                                  roi_feat_size=box.get("roi_feat_size", 7),
                                  num_classes=int(box.get("num_classes", 81)) - 1,
                                  bbox_coder=dict(_coder(box), target_stds=list(box.get("target_stds",
                                                                                        (0.1, 0.1, 0.2, 0.2)))),
                                  reg_class_agnostic=bool(box.get("reg_class_agnostic", False))))
        if model.get("mask_head"):
            mask = dict(model["mask_head"])
            if mask.get("upsample_method", "deconv") != "deconv" or int(mask.get("upsample_ratio", 2)) != 2:
                raise common.UnsupportedError("mask_head.upsample_method / upsample_ratio: deconv x2 only.")
            roi.update(mask_roi_extractor=_roi_extractor(model["mask_roi_extractor"]),
                       mask_head=dict(type=mask.get("type"), num_convs=mask.get("num_convs", 4),
                                      in_channels=mask.get("in_channels", 256),
                                      conv_out_channels=mask.get("conv_out_channels", 256),
                                      num_classes=int(mask.get("num_classes", 81)) - 1,
                                      class_agnostic=bool(mask.get("class_agnostic", False))))
        out["roi_head"] = roi
    out["test_cfg"] = _test_cfg(model.get("test_cfg", test_cfg), kind)
    return out


def as_legacy(model, sampling_ratio=None):
    """A 2.x model dict (Faster / Mask R-CNN, RetinaNet) with the configs/legacy_1.x settings: legacy anchors
    (centre offset 0.5) and box coders, RoIAlign aligned=False with `sampling_ratio` (None: the dict's
    when it is not 0, else 2)."""
    model = copy.deepcopy(model)
    heads = [model["bbox_head"]] if model.get("type") == "RetinaNet" else [model["rpn_head"]]
    for head in heads:
        head["anchor_generator"] = dict(head.get("anchor_generator") or {}, type="LegacyAnchorGenerator",
                                        center_offset=0.5)
    roi = model.get("roi_head") or {}
    for head in heads + [h for h in (roi.get("bbox_head"),) if h]:
        head["bbox_coder"] = dict(head.get("bbox_coder") or {}, type="LegacyDeltaXYWHBBoxCoder")
    for name in ("bbox_roi_extractor", "mask_roi_extractor"):
        if roi.get(name):
            layer = dict(roi[name].get("roi_layer") or {})
            ratio = sampling_ratio if sampling_ratio is not None else (layer.get("sampling_ratio") or
                                                                       LEGACY_SAMPLING_RATIO)
            roi[name] = dict(roi[name], roi_layer=dict(layer, sampling_ratio=int(ratio), aligned=False))
    return model


# -- The weights ------------------------------------------------------------------------------------------------

_DCN_OFFSET = re.compile(r"^(backbone\.layer\d+\.\d+\.conv2)_offset\.(weight|bias)$")
_RETINA_CONV = re.compile(r"^(bbox_head\.(?:cls|reg)_convs\.\d+)\.(weight|bias)$")


def upgrade(state_dict, family):
    """{2.x key: array} of a 1.x state dict ({key: array}, counters already dropped) of a registered `family`
    (its name): the key moves and class-channel changes of the module docstring."""
    require_family(family)
    two_stage = family != "retinanet"
    out = {}
    for key, value in state_dict.items():
        key = _DCN_OFFSET.sub(r"\1.conv_offset.\2", key)
        if two_stage and key.startswith(_HEADS):
            key = "roi_head." + key
        if not two_stage:
            key = _RETINA_CONV.sub(r"\1.conv.\2", key)
        out[key] = value
    if two_stage:
        cls = out.get("roi_head.bbox_head.fc_cls.bias")
        if cls is None:
            raise ValueError("the mmdetection 1.x two-stage state dict has no bbox_head.fc_cls.bias: is it a Faster / "
                             "Mask R-CNN checkpoint?")
        rows = cls.shape[0]  # classes + background (first)
        for leaf in ("weight", "bias"):
            key = f"roi_head.bbox_head.fc_cls.{leaf}"
            out[key] = out[key][list(range(1, rows)) + [0]]
            reg = out.get(f"roi_head.bbox_head.fc_reg.{leaf}")
            if reg is not None and reg.shape[0] == 4 * rows:  # class-specific: the background's 4 rows first
                out[f"roi_head.bbox_head.fc_reg.{leaf}"] = reg[4:]
            logits = out.get(f"roi_head.mask_head.conv_logits.{leaf}")
            if logits is not None and logits.shape[0] == rows:  # class-specific: the background's channel first
                out[f"roi_head.mask_head.conv_logits.{leaf}"] = logits[1:]
    return out
