"""RetinaNet (mmdetection RetinaNet: ResNet / ResNeXt + FPN P3-P7 with extra convs on C5, RetinaHead).

mmdetection 3.x inference (and 2.x since open-mmlab/mmdetection#5317): per level the best nms_pre
(anchor, class) pairs scoring above score_thr, decoded and clipped, boxes with a side <= min_bbox_size
dropped, class-wise NMS over all levels (tfdet: retina.topk_mode "anchor_class", retina.min_size)."""

from tfdet.zoo.mmdet import common
from tfdet.zoo.mmdet.registry import Family, register_family

RETINA_TEST = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                   max_per_img=100)


def retina_model(arch):
    return dict(type="RetinaNet", backbone=arch.backbone(),
                neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
                          add_extra_convs="on_input", num_outs=5),
                bbox_head=dict(type="RetinaHead", num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
                               anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                                     ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                               bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                               target_stds=[1.0] * 4)),
                test_cfg=dict(RETINA_TEST))


def _head(spec):
    head = spec["model"]["bbox_head"]
    common.require(head.get("type"), ("RetinaHead",), "bbox_head.type")
    common.require(bool(head.get("use_sigmoid_cls", (head.get("loss_cls") or {}).get("use_sigmoid", True))), (True,),
                   "bbox_head.loss_cls.use_sigmoid")
    if head.get("conv_cfg") or head.get("norm_cfg"):
        raise common.UnsupportedError("bbox_head.conv_cfg / norm_cfg are not supported (plain convs).")
    return head


def _num_anchors(head):
    generator = head.get("anchor_generator") or {}
    return int(generator.get("scales_per_octave", 3)) * len(generator.get("ratios", (0.5, 1.0, 2.0)))


def retina_tfdet_model(spec, num_classes):
    from tfdet.modeling.dense_heads import RetinaSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    model, head = spec["model"], _head(spec)
    inputs, extra, _, _ = common.fpn_levels(model["neck"])
    levels = inputs + extra
    generator = head.get("anchor_generator") or {}
    convention = common.head_convention(generator, head.get("bbox_coder"), [2 ** lvl for lvl in levels], "bbox_head")
    if generator.get("scales"):
        raise common.UnsupportedError("bbox_head.anchor_generator.scales: RetinaNet anchors by octave_base_scale / "
                                      "scales_per_octave only.")
    test = model.get("test_cfg") or {}
    retina = with_defaults(RetinaSpec.DEFAULTS, levels=tuple(levels), feat_channels=int(head.get("feat_channels", 256)),
                           num_convs=int(head.get("stacked_convs", 4)),
                           box_stds=common.coder_stds(head.get("bbox_coder"), "bbox_head.bbox_coder", (1.0,) * 4),
                           octave_base_scale=float(generator.get("octave_base_scale", 4)),
                           scales_per_octave=int(generator.get("scales_per_octave", 3)),
                           anchor_ratios=tuple(float(r) for r in generator.get("ratios", (0.5, 1.0, 2.0))),
                           pre_nms_top_k=int(test.get("nms_pre", 1000)),
                           score_threshold=float(test.get("score_thr", 0.05)),
                           nms_iou=common.nms_iou({"nms": {"iou_threshold": 0.5}, **test}, "test_cfg"),
                           max_detections=int(test.get("max_per_img", 100)), topk_mode="anchor_class",
                           min_size=float(test.get("min_bbox_size", 0)), box_convention=convention)
    retina.pop("type")
    return dict(type="RetinaNet", num_classes=num_classes,
                backbone=common.backbone_block(model["backbone"], inputs), neck=common.fpn_block(model["neck"]),
                retina=retina)


def retina_params(spec, num_classes):
    model, head, table = spec["model"], _head(spec), {}
    common.backbone_params(table, model["backbone"], spec["input"]["bgr"])
    common.fpn_params(table, model["neck"])
    channels, feat = int(head.get("in_channels", 256)), int(head.get("feat_channels", 256))
    for tower in ("cls", "reg"):
        for i in range(int(head.get("stacked_convs", 4))):
            common.conv(table, f"bbox_head.{tower}_convs.{i}.conv", f"retina_head/{tower}_conv{i}", feat,
                        channels if i == 0 else feat, 3)
    anchors = _num_anchors(head)
    common.conv(table, "bbox_head.retina_cls", "retina_head/retina_cls", anchors * num_classes, feat, 3)
    common.conv(table, "bbox_head.retina_reg", "retina_head/retina_reg", anchors * 4, feat, 3)
    return table


def retina_classes(state_dict):
    cls, reg = state_dict.get("bbox_head.retina_cls.bias"), state_dict.get("bbox_head.retina_reg.bias")
    if cls is None or reg is None or cls.ndim != 1 or reg.ndim != 1 or reg.shape[0] % 4:
        return None
    anchors = reg.shape[0] // 4
    return int(cls.shape[0]) // anchors if anchors and cls.shape[0] % anchors == 0 else None


register_family(Family(
    name="retinanet",
    matches=lambda model: (model.get("type") == "RetinaNet"
                           and (model.get("bbox_head") or {}).get("type") == "RetinaHead"),
    mmdet_model=retina_model, tfdet_model=retina_tfdet_model, params=retina_params, source_classes=retina_classes,
    class_layers=("retina_head/retina_cls/",)))
