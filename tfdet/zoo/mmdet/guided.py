"""Guided Anchoring (mmdetection configs/guided_anchoring): the GA-RPN detector (RPN with a GARPNHead),
GA-Faster R-CNN (FasterRCNN with a GARPNHead and a Shared2FC box head) and GA-RetinaNet (RetinaNet with a
GARetinaHead), on ResNet / ResNeXt + FPN (the zoo's: caffe-style R-50). tfdet: model.rpn type "GARPN",
model.retina type "GARetina" (tfdet.modeling.dense_heads.ga_head, ga_retina_head).

Inference as mmdetection's GuidedAnchorHead / GARPNHead (tools/zoo_reference/mmdet_conventions.md 2.5,
2.13): only locations with sigmoid(loc) >= loc_filter_thr give anchors (the squares with the predicted
shape, anchor_coder's stds, not clipped); GA-RPN: per level the nms_pre best, decoded with bbox_coder's
stds and clipped, w, h > min_bbox_size, NMS per level, the best max_per_img of all levels; GA-RetinaNet:
per level the nms_pre locations with the best class score, class-wise NMS over all levels (score >
score_thr), max_per_img (no size filter). The training settings (train_cfg) are tfdet's defaults."""

from tfdet.zoo.mmdet import common, two_stage
from tfdet.zoo.mmdet.registry import Family, register_family

ANCHOR_STDS = (0.07, 0.07, 0.14, 0.14)  # GA-RPN's anchor coder (mmdetection's configs)
GA_RPN_BOX_STDS = (0.07, 0.07, 0.11, 0.11)
GA_RPN_TEST = dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0,
                   nms_post=1000)
GA_RETINA_TEST = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)


def _generators(octave_base_scale, strides):
    approx = dict(type="AnchorGenerator", octave_base_scale=octave_base_scale, scales_per_octave=3,
                  ratios=[0.5, 1.0, 2.0], strides=list(strides))
    square = dict(type="AnchorGenerator", ratios=[1.0], scales=[octave_base_scale], strides=list(strides))
    return dict(approx_anchor_generator=approx, square_anchor_generator=square)


def _coder(stds):
    return dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds))


def ga_rpn_head():
    return dict(type="GARPNHead", in_channels=256, feat_channels=256, **_generators(8, (4, 8, 16, 32, 64)),
                anchor_coder=_coder(ANCHOR_STDS), bbox_coder=_coder(GA_RPN_BOX_STDS), loc_filter_thr=0.01)


def ga_rpn_model(arch):
    return dict(type="RPN", backbone=arch.backbone(), neck=two_stage.fpn_neck(), rpn_head=ga_rpn_head(),
                test_cfg=dict(rpn=dict(GA_RPN_TEST, nms_pre=2000)))


def ga_faster_model(arch):
    roi = two_stage.roi_head(False)
    roi["bbox_head"]["bbox_coder"] = _coder((0.05, 0.05, 0.1, 0.1))
    return dict(type="FasterRCNN", backbone=arch.backbone(), neck=two_stage.fpn_neck(), rpn_head=ga_rpn_head(),
                roi_head=roi, test_cfg=dict(rpn=dict(GA_RPN_TEST, max_per_img=300),
                                            rcnn=dict(two_stage.RCNN_TEST, score_thr=1e-3)))


def ga_retina_model(arch):
    return dict(type="RetinaNet", backbone=arch.backbone(),
                neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
                          add_extra_convs="on_input", num_outs=5),
                bbox_head=dict(type="GARetinaHead", num_classes=80, in_channels=256, stacked_convs=4,
                               feat_channels=256, **_generators(4, (8, 16, 32, 64, 128)),
                               anchor_coder=_coder((1.0,) * 4), bbox_coder=_coder((1.0,) * 4), loc_filter_thr=0.01),
                test_cfg=dict(GA_RETINA_TEST))


# -- The guided anchor settings ---------------------------------------------------------------------------

def guided_settings(head, levels, what):
    """GUIDED_DEFAULTS' inference fields of a GuidedAnchorHead dict (GARPNHead, GARetinaHead), checked against
    what tfdet reproduces: approxes and squares at strides 2**level, one square of scale octave_base_scale,
    sigmoid classification, zero coder means."""
    strides = [2 ** lvl for lvl in levels]
    defaults = _generators(8, (4, 8, 16, 32, 64))  # GuidedAnchorHead's own
    approx = head.get("approx_anchor_generator") or defaults["approx_anchor_generator"]
    square = head.get("square_anchor_generator") or defaults["square_anchor_generator"]
    common.anchor_settings(approx, strides, f"{what}.approx_anchor_generator")
    common.anchor_settings(square, strides, f"{what}.square_anchor_generator")
    base = float(approx.get("octave_base_scale", 8))
    common.require(tuple(float(r) for r in square.get("ratios", (1.0,))), ((1.0,),),
                   f"{what}.square_anchor_generator.ratios")
    common.require(tuple(float(s) for s in square.get("scales", (base,))), ((base,),),
                   f"{what}.square_anchor_generator.scales")
    common.require(bool(head.get("reg_decoded_bbox", False)), (False,), f"{what}.reg_decoded_bbox")
    common.require(bool(head.get("use_sigmoid_cls", (head.get("loss_cls") or {}).get("use_sigmoid", True))), (True,),
                   f"{what}.loss_cls.use_sigmoid")
    if approx.get("scales"):
        raise common.UnsupportedError(f"{what}.approx_anchor_generator.scales: approxes by octave_base_scale / "
                                      "scales_per_octave only.")
    return dict(levels=tuple(levels), feat_channels=int(head.get("feat_channels", 256)), octave_base_scale=base,
                scales_per_octave=int(approx.get("scales_per_octave", 3)),
                anchor_ratios=tuple(float(r) for r in approx.get("ratios", (0.5, 1.0, 2.0))),
                anchor_stds=common.coder_stds(head.get("anchor_coder"), f"{what}.anchor_coder", (1.0,) * 4),
                deformable_groups=int(head.get("deform_groups", 4)),
                loc_threshold=float(head.get("loc_filter_thr", 0.01)))


def adaption_params(table, key, path, channels, deform_groups):
    """An mmdet FeatureAdaption: conv_offset (1x1 from the 2 shape channels, no bias) and conv_adaption (3x3
    deformable, no bias) -> tfdet FeatureAdaption's conv_offset / conv_adaption kernels."""
    common.conv(table, f"{key}.conv_offset", f"{path}/conv_offset", 2 * 9 * deform_groups, 2, 1, bias=False)
    common.conv(table, f"{key}.conv_adaption", f"{path}/conv_adaption", channels, channels, 3, bias=False)


# -- GA-RPN (the RPN detector and GA-Faster R-CNN) ------------------------------------------------------------

def ga_rpn_block(rpn_head, test_rpn, levels):
    """tfdet's model.rpn block (type "GARPN") for an mmdet GARPNHead dict and its test_cfg.rpn."""
    from tfdet.modeling.dense_heads import GARPNSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    common.require(rpn_head.get("type"), ("GARPNHead",), "rpn_head.type")
    settings = guided_settings(rpn_head, levels, "rpn_head")
    test_rpn = test_rpn or {}
    if test_rpn.get("nms_across_levels"):
        raise common.UnsupportedError("test_cfg.rpn.nms_across_levels=True is not supported (NMS per level).")
    max_proposals = int(test_rpn.get("max_per_img", test_rpn.get("max_num", 1000)))
    nms_post = int(test_rpn.get("nms_post", max_proposals))
    if nms_post < max_proposals:  # per level the first nms_post after NMS: binds only below max_per_img
        raise common.UnsupportedError(f"test_cfg.rpn.nms_post = {nms_post} < max_per_img = {max_proposals} is not "
                                      "supported (tfdet keeps the best max_per_img of all levels).")
    return with_defaults(GARPNSpec.DEFAULTS, **settings,
                         box_stds=common.coder_stds(rpn_head.get("bbox_coder"), "rpn_head.bbox_coder", (1.0,) * 4),
                         pre_nms_top_k_test=int(test_rpn.get("nms_pre", 1000)), max_proposals_test=max_proposals,
                         nms_iou=common.nms_iou({"nms": {"iou_threshold": 0.7}, **test_rpn}, "test_cfg.rpn"),
                         min_size=float(test_rpn.get("min_bbox_size", 0)))


def ga_rpn_params(table, rpn_head, prefix="rpn_head"):
    """`rpn_head.*` keys of a GARPNHead: rpn_conv, conv_loc, conv_shape, feature_adaption, conv_cls, conv_reg
    -> tfdet GARPNHead's layers (one guided anchor per location)."""
    channels, feat = int(rpn_head.get("in_channels", 256)), int(rpn_head.get("feat_channels", 256))
    common.conv(table, f"{prefix}.rpn_conv", "rpn_head/rpn_conv", feat, channels, 3)
    common.conv(table, f"{prefix}.conv_loc", "rpn_head/conv_loc", 1, feat, 1)
    common.conv(table, f"{prefix}.conv_shape", "rpn_head/conv_shape", 2, feat, 1)
    adaption_params(table, f"{prefix}.feature_adaption", "rpn_head/feature_adaption", feat,
                    int(rpn_head.get("deform_groups", 4)))
    common.conv(table, f"{prefix}.conv_cls", "rpn_head/conv_cls", 1, feat, 1)
    common.conv(table, f"{prefix}.conv_reg", "rpn_head/conv_reg", 4, feat, 1)


def _base(spec):
    """backbone, neck and GA-RPN blocks of a GA-RPN / GA-Faster R-CNN spec."""
    model = spec["model"]
    inputs, levels = two_stage.levels_of(spec)
    return dict(backbone=common.backbone_block(model["backbone"], inputs), neck=common.fpn_block(model["neck"]),
                rpn=ga_rpn_block(model["rpn_head"], (model.get("test_cfg") or {}).get("rpn"), levels))


def ga_rpn_tfdet_model(spec, num_classes):
    return dict(type="RPN", num_classes=num_classes, **_base(spec))


def ga_faster_tfdet_model(spec, num_classes):
    model = spec["model"]
    return dict(type="FasterRCNN", num_classes=num_classes, **_base(spec),
                roi=two_stage.roi_block(model["roi_head"], (model.get("test_cfg") or {}).get("rcnn")))


def ga_rpn_detector_params(spec, num_classes):
    table = {}
    two_stage.base_params(spec, table)
    ga_rpn_params(table, spec["model"]["rpn_head"])
    return table


def ga_faster_params(spec, num_classes):
    table = ga_rpn_detector_params(spec, num_classes)
    common.shared2fc_params(table, spec["model"]["roi_head"]["bbox_head"], num_classes)
    return table


def _ga_rpn_head(model):
    return (model.get("rpn_head") or {}).get("type") == "GARPNHead"


register_family(Family(
    name="ga_rpn",
    matches=lambda model: model.get("type") == "RPN" and _ga_rpn_head(model),
    mmdet_model=ga_rpn_model, tfdet_model=ga_rpn_tfdet_model, params=ga_rpn_detector_params,
    source_classes=lambda sd: 1, rpn_detector=True))

register_family(Family(
    name="ga_faster_rcnn",
    matches=lambda model: (model.get("type") in ("FasterRCNN", "TwoStageDetector") and _ga_rpn_head(model)
                           and (model.get("roi_head") or {}).get("type", "StandardRoIHead") == "StandardRoIHead"
                           and not (model.get("roi_head") or {}).get("mask_head")),
    mmdet_model=ga_faster_model, tfdet_model=ga_faster_tfdet_model, params=ga_faster_params,
    source_classes=two_stage.box_head_classes, class_layers=two_stage.CLASS_LAYERS))


# -- GA-RetinaNet -----------------------------------------------------------------------------------------

def _ga_retina_head(spec):
    head = spec["model"]["bbox_head"]
    common.require(head.get("type"), ("GARetinaHead",), "bbox_head.type")
    if head.get("conv_cfg") or head.get("norm_cfg"):
        raise common.UnsupportedError("bbox_head.conv_cfg / norm_cfg are not supported (plain convs).")
    return head


def ga_retina_tfdet_model(spec, num_classes):
    from tfdet.modeling.dense_heads import GARetinaSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    model, head = spec["model"], _ga_retina_head(spec)
    inputs, extra, _, _ = common.fpn_levels(model["neck"])
    test = model.get("test_cfg") or {}
    retina = with_defaults(GARetinaSpec.DEFAULTS, **guided_settings(head, inputs + extra, "bbox_head"),
                           num_convs=int(head.get("stacked_convs", 4)),
                           box_stds=common.coder_stds(head.get("bbox_coder"), "bbox_head.bbox_coder", (1.0,) * 4),
                           pre_nms_top_k=int(test.get("nms_pre", 1000)),
                           score_threshold=float(test.get("score_thr", 0.05)),
                           nms_iou=common.nms_iou({"nms": {"iou_threshold": 0.5}, **test}, "test_cfg"),
                           max_detections=int(test.get("max_per_img", 100)))
    return dict(type="RetinaNet", num_classes=num_classes,
                backbone=common.backbone_block(model["backbone"], inputs), neck=common.fpn_block(model["neck"]),
                retina=retina)


def ga_retina_params(spec, num_classes):
    """GARetinaHead: cls_convs / reg_convs, conv_loc (on the class tower), conv_shape (on the box tower),
    feature_adaption_{cls,reg}, retina_cls (num_classes per location), retina_reg (4) -> retina_head/*."""
    model, head, table = spec["model"], _ga_retina_head(spec), {}
    common.backbone_params(table, model["backbone"], spec["input"]["bgr"])
    common.fpn_params(table, model["neck"])
    channels, feat = int(head.get("in_channels", 256)), int(head.get("feat_channels", 256))
    for tower in ("cls", "reg"):
        for i in range(int(head.get("stacked_convs", 4))):
            common.conv(table, f"bbox_head.{tower}_convs.{i}.conv", f"retina_head/{tower}_conv{i}", feat,
                        channels if i == 0 else feat, 3)
    common.conv(table, "bbox_head.conv_loc", "retina_head/conv_loc", 1, feat, 1)
    common.conv(table, "bbox_head.conv_shape", "retina_head/conv_shape", 2, feat, 1)
    for tower in ("cls", "reg"):
        adaption_params(table, f"bbox_head.feature_adaption_{tower}", f"retina_head/adaption_{tower}", feat,
                        int(head.get("deform_groups", 4)))
    common.conv(table, "bbox_head.retina_cls", "retina_head/retina_cls", num_classes, feat, 3)
    common.conv(table, "bbox_head.retina_reg", "retina_head/retina_reg", 4, feat, 3)
    return table


def ga_retina_classes(state_dict):
    cls = state_dict.get("bbox_head.retina_cls.bias")
    return int(cls.shape[0]) if cls is not None and cls.ndim == 1 else None


register_family(Family(
    name="ga_retinanet",
    matches=lambda model: (model.get("type") == "RetinaNet"
                           and (model.get("bbox_head") or {}).get("type") == "GARetinaHead"),
    mmdet_model=ga_retina_model, tfdet_model=ga_retina_tfdet_model, params=ga_retina_params,
    source_classes=ga_retina_classes, class_layers=("retina_head/retina_cls/",)))
