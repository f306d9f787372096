"""The parts that mmdetection detectors share, each as a parameter table and a tfdet config block:
ResNet / ResNeXt backbones (pytorch and caffe style, DCN / DCNv2 in any stage), FPN, the RPN head, the
Shared2FC box head, the FCN mask head. Families (tfdet.zoo.mmdet) compose them.

A parameter table is {mmdet state-dict key: Param(shape, tfdet weight path, transform)}: the key's
expected shape, the tfdet weight (tfdet.engine.checkpoint.weights_by_path) it becomes, and the function
that turns the torch array into the tfdet one. Table functions take the mmdet config dicts (as the
config text has them, or as an arch name stands for them) and check the settings tfdet cannot reproduce
(UnsupportedError, naming the field)."""

import functools
from typing import Callable, NamedTuple

import numpy as np

BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
IGNORED_LEAVES = ("num_batches_tracked",)
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
NECK_NAME = "fpn"  # the tfdet detector's neck layer


class UnsupportedError(ValueError):
    """An mmdetection setting the converter cannot reproduce in tfdet."""


class Param(NamedTuple):
    shape: tuple
    path: str              # tfdet weight path
    transform: Callable    # torch array -> tfdet array


def identity(x):
    return x


def conv_kernel(w):
    """torch conv [O, I, kh, kw] (ConvTranspose [I, O, kh, kw]) -> TF [kh, kw, I, O] ([kh, kw, O, I])."""
    return w.transpose(2, 3, 1, 0)


def linear_kernel(w):
    return w.T


def bgr_conv_kernel(w):
    """A first conv trained on BGR images, for RGB input: its input channels reversed, then conv_kernel."""
    return conv_kernel(w[:, ::-1])


def _fc_chw_to_hwc(w, channels, size):
    """A Linear weight [out, C*H*W] flattened (C, H, W) (torch) as a Dense kernel [H*W*C, out] (tfdet
    flattens NHWC maps (H, W, C))."""
    out = w.shape[0]
    return w.reshape(out, channels, size, size).transpose(2, 3, 1, 0).reshape(size * size * channels, out)


def fc_chw_to_hwc(channels, size):
    return functools.partial(_fc_chw_to_hwc, channels=channels, size=size)


def conv(table, key, path, out, inp, k, bias=True, transform=conv_kernel):
    """Adds a conv (or ConvTranspose: pass (inp, out)) `key` -> tfdet layer `path`."""
    table[f"{key}.weight"] = Param((out, inp, k, k), f"{path}/kernel", transform)
    if bias:
        table[f"{key}.bias"] = Param((out,), f"{path}/bias", identity)


def linear(table, key, path, out, inp, transform=linear_kernel):
    table[f"{key}.weight"] = Param((out, inp), f"{path}/kernel", transform)
    table[f"{key}.bias"] = Param((out,), f"{path}/bias", identity)


def batch_norm(table, key, path, channels):
    for leaf, tf_leaf in BN_LEAVES.items():
        table[f"{key}.{leaf}"] = Param((channels,), f"{path}/{tf_leaf}", identity)


def require(value, allowed, what):
    """UnsupportedError unless value is one of `allowed`."""
    if value not in allowed:
        raise UnsupportedError(f"{what} = {value!r} is not supported (tfdet reproduces {list(allowed)}).")


def close(a, b):
    return a is not None and len(a) == len(b) and np.allclose(np.asarray(a, float), np.asarray(b, float))


# -- Backbone ----------------------------------------------------------------------------------------------

def backbone_settings(backbone):
    """(depth, groups, base_width, style, dcn, stage_with_dcn) of an mmdet ResNet / ResNeXt dict; dcn is
    None or {"modulated": bool, "deformable_groups": int}."""
    kind = backbone.get("type")
    require(kind, ("ResNet", "ResNeXt"), "model.backbone.type")
    depth = int(backbone.get("depth", 50))
    require(depth, tuple(STAGE_BLOCKS), "model.backbone.depth")
    groups = int(backbone.get("groups", 1))
    base_width = int(backbone.get("base_width", 4 if kind == "ResNeXt" else 64))
    if kind == "ResNet":
        groups, base_width = 1, 64
    style = backbone.get("style", "pytorch")
    require(style, ("pytorch", "caffe"), "model.backbone.style")
    require(int(backbone.get("num_stages", 4)), (4,), "model.backbone.num_stages")
    require(tuple(backbone.get("strides", (1, 2, 2, 2))), ((1, 2, 2, 2),), "model.backbone.strides")
    require(tuple(backbone.get("dilations", (1, 1, 1, 1))), ((1, 1, 1, 1),), "model.backbone.dilations")
    require((backbone.get("norm_cfg") or {"type": "BN"}).get("type"), ("BN", "SyncBN"), "model.backbone.norm_cfg.type")
    require(bool(backbone.get("norm_eval", True)), (True,), "model.backbone.norm_eval")
    for field in ("plugins", "gcb", "gen_attention", "stage_with_gcb"):
        if backbone.get(field):
            raise UnsupportedError(f"model.backbone.{field} = {backbone[field]!r} is not supported.")
    dcn, stages = backbone.get("dcn"), tuple(bool(s) for s in backbone.get("stage_with_dcn", (False,) * 4))
    if dcn and any(stages):
        require(dcn.get("type"), ("DCN", "DCNv2"), "model.backbone.dcn.type")
        require(bool(dcn.get("fallback_on_stride", False)), (False,), "model.backbone.dcn.fallback_on_stride")
        dcn = {"modulated": dcn["type"] == "DCNv2", "deformable_groups": int(dcn.get("deform_groups", 1))}
    else:
        dcn, stages = None, (False,) * 4
    return depth, groups, base_width, style, dcn, stages


def backbone_block(backbone, out_levels):
    """tfdet's backbone block for an mmdet ResNet / ResNeXt dict (frozen BN, eps 1e-5 as mmdet's)."""
    depth, groups, base_width, style, dcn, stages = backbone_settings(backbone)
    block = dict(type="ResNet", depth=depth, groups=groups, base_width=base_width, style=style, norm="frozen_bn",
                 frozen_stages=int(backbone.get("frozen_stages", 1)), out_levels=tuple(out_levels))
    if dcn:
        block.update(stage_with_dcn=stages, dcn=dcn)
    return block


def backbone_params(table, backbone, bgr):
    """`backbone.*` keys of an mmdet ResNet / ResNeXt; bgr: the model was trained on BGR input (conv1's
    input channels are reversed for tfdet's RGB)."""
    depth, groups, base_width, _, dcn, stages = backbone_settings(backbone)
    conv(table, "backbone.conv1", "conv1", 64, 3, 7, bias=False, transform=bgr_conv_kernel if bgr else conv_kernel)
    batch_norm(table, "backbone.bn1", "bn1", 64)
    channels = 64
    for s, blocks in enumerate(STAGE_BLOCKS[depth], 1):
        planes = 64 * 2 ** (s - 1)
        width = int(planes * base_width / 64) * groups
        for b in range(blocks):
            key, path = f"backbone.layer{s}.{b}", f"layer{s}_{b}"
            conv(table, f"{key}.conv1", f"{path}_conv1", width, channels, 1, bias=False)
            batch_norm(table, f"{key}.bn1", f"{path}_bn1", width)
            conv(table, f"{key}.conv2", f"{path}_conv2", width, width // groups, 3, bias=False)
            if stages[s - 1]:  # mmcv DeformConv2dPack / ModulatedDeformConv2dPack: conv_offset with bias
                offsets = (27 if dcn["modulated"] else 18) * dcn["deformable_groups"]
                table[f"{key}.conv2.conv_offset.weight"] = Param((offsets, width, 3, 3), f"{path}_conv2/offset_kernel",
                                                                 conv_kernel)
                table[f"{key}.conv2.conv_offset.bias"] = Param((offsets,), f"{path}_conv2/offset_bias", identity)
            batch_norm(table, f"{key}.bn2", f"{path}_bn2", width)
            conv(table, f"{key}.conv3", f"{path}_conv3", 4 * planes, width, 1, bias=False)
            batch_norm(table, f"{key}.bn3", f"{path}_bn3", 4 * planes)
            if b == 0:
                conv(table, f"{key}.downsample.0", f"{path}_downsample_0", 4 * planes, channels, 1, bias=False)
                batch_norm(table, f"{key}.downsample.1", f"{path}_downsample_1", 4 * planes)
            channels = 4 * planes


# -- FPN ---------------------------------------------------------------------------------------------------

def fpn_levels(neck):
    """(backbone levels the FPN reads, extra levels above them, extra kind "maxpool" / "conv", extra source)
    of an mmdet FPN dict (level l: stride 2**l; C2 is the backbone's first output)."""
    if neck.get("type") == "FPN_CARAFE":
        from tfdet.zoo.mmdet import carafe  # pylint: disable=import-outside-toplevel
        return (*carafe.fpn_levels(neck), "carafe_lateral", "input")
    require(neck.get("type"), ("FPN", "FPN_CARAFE"), "model.neck.type")
    inputs = len(neck.get("in_channels", (256, 512, 1024, 2048)))
    start, end = int(neck.get("start_level", 0)), int(neck.get("end_level", -1))
    require(end, (-1, inputs - 1), "model.neck.end_level")
    levels = list(range(2 + start, 2 + inputs))
    num_outs = int(neck.get("num_outs", len(levels)))
    extra_levels = list(range(levels[-1] + 1, levels[0] + num_outs))
    add = neck.get("add_extra_convs", False)
    if add is True:
        add = "on_input"
    require(add, (False, "on_input", "on_output"), "model.neck.add_extra_convs")
    if neck.get("norm_cfg") or neck.get("act_cfg"):
        raise UnsupportedError("model.neck.norm_cfg / act_cfg are not supported (plain FPN convs only).")
    upsample = neck.get("upsample_cfg") or {"mode": "nearest"}
    require(upsample.get("mode"), ("nearest",), "model.neck.upsample_cfg.mode")
    if upsample.get("scale_factor") not in (None, 2):
        raise UnsupportedError(f"model.neck.upsample_cfg = {upsample!r} is not supported.")
    return levels, extra_levels, "conv" if add else "maxpool", "output" if add == "on_output" else "input"


def fpn_block(neck):
    """tfdet's neck block for an mmdet FPN dict."""
    from tfdet.modeling.necks import FPN_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    if neck.get("type") == "FPN_CARAFE":
        from tfdet.zoo.mmdet import carafe  # pylint: disable=import-outside-toplevel
        return carafe.fpn_block(neck)
    levels, extra_levels, extra, source = fpn_levels(neck)
    block = with_defaults(FPN_DEFAULTS, out_channels=int(neck.get("out_channels", 256)), min_level=levels[0],
                          max_level=(extra_levels or levels)[-1], extra=extra, extra_source=source,
                          relu_before_extra=bool(neck.get("relu_before_extra_convs", False)), upsample="nearest")
    block.pop("type")
    return block


def fpn_params(table, neck):
    """`neck.*` keys of an mmdet FPN: lateral_convs.i -> fpn/lateral{l}, fpn_convs.i -> fpn/output{l}, extra
    convs (fpn_convs past the inputs) -> fpn/extra{l}; FPN_CARAFE: tfdet.zoo.mmdet.carafe."""
    if neck.get("type") == "FPN_CARAFE":
        from tfdet.zoo.mmdet import carafe  # pylint: disable=import-outside-toplevel
        return carafe.fpn_params(table, neck)
    levels, extra_levels, extra, source = fpn_levels(neck)
    in_channels = list(neck.get("in_channels", (256, 512, 1024, 2048)))[levels[0] - 2:]
    out = int(neck.get("out_channels", 256))
    for i, (level, channels) in enumerate(zip(levels, in_channels)):
        conv(table, f"neck.lateral_convs.{i}.conv", f"{NECK_NAME}/lateral{level}", out, channels, 1)
        conv(table, f"neck.fpn_convs.{i}.conv", f"{NECK_NAME}/output{level}", out, out, 3)
    if extra == "conv":
        for j, level in enumerate(extra_levels):
            inp = in_channels[-1] if j == 0 and source == "input" else out
            conv(table, f"neck.fpn_convs.{len(levels) + j}.conv", f"{NECK_NAME}/extra{level}", out, inp, 3)


# -- RPN head ----------------------------------------------------------------------------------------------

def anchor_settings(generator, strides, what):
    """The box convention ("current" | "legacy_v1", tfdet.ops.legacy) of an mmdet AnchorGenerator dict (strides
    2**level, centre offset 0) or LegacyAnchorGenerator dict (centre offset 0.5: configs/legacy_1.x)."""
    kind = generator.get("type", "AnchorGenerator")
    require(kind, ("AnchorGenerator", "LegacyAnchorGenerator"), f"{what}.type")
    require(tuple(generator.get("strides", strides)), (tuple(strides),), f"{what}.strides")
    require(float(generator.get("center_offset", 0.0)), (0.5 if kind == "LegacyAnchorGenerator" else 0.0,),
            f"{what}.center_offset")
    if generator.get("base_sizes") or generator.get("scale_major", True) is not True:
        raise UnsupportedError(f"{what}: base_sizes / scale_major=False are not supported.")
    return "legacy_v1" if kind == "LegacyAnchorGenerator" else "current"


def coder_convention(coder):
    """The box convention of an mmdet DeltaXYWHBBoxCoder ("current") / LegacyDeltaXYWHBBoxCoder ("legacy_v1") dict."""
    return "legacy_v1" if (coder or {}).get("type") == "LegacyDeltaXYWHBBoxCoder" else "current"


def head_convention(generator, coder, strides, what):
    """The one box convention of a dense head's anchor generator and box coder (tfdet switches both at once)."""
    anchors, boxes = anchor_settings(generator, strides, f"{what}.anchor_generator"), coder_convention(coder)
    if anchors != boxes:
        raise UnsupportedError(f"{what}: anchor_generator {generator.get('type', 'AnchorGenerator')} with bbox_coder "
                               f"{(coder or {}).get('type', 'DeltaXYWHBBoxCoder')} is not supported (tfdet's "
                               "box_convention switches both: AnchorGenerator + DeltaXYWHBBoxCoder, or "
                               "LegacyAnchorGenerator + LegacyDeltaXYWHBBoxCoder).")
    return anchors


def coder_stds(coder, what, default_stds):
    """The stds of an mmdet DeltaXYWHBBoxCoder / LegacyDeltaXYWHBBoxCoder dict (means must be 0)."""
    coder = coder or {}
    require(coder.get("type", "DeltaXYWHBBoxCoder"), ("DeltaXYWHBBoxCoder", "LegacyDeltaXYWHBBoxCoder"), f"{what}.type")
    if not close(coder.get("target_means", (0.0,) * 4), (0.0,) * 4):
        raise UnsupportedError(f"{what}.target_means = {coder.get('target_means')!r}: only zero means are supported.")
    require(bool(coder.get("clip_border", True)), (True,), f"{what}.clip_border")
    return tuple(float(s) for s in coder.get("target_stds", default_stds))


def nms_iou(cfg, what):
    """The IoU threshold of an mmdet test_cfg's nms (2.x also nms_thr)."""
    nms = cfg.get("nms") or {}
    require(nms.get("type", "nms"), ("nms",), f"{what}.nms.type")
    iou = nms.get("iou_threshold", cfg.get("nms_thr"))
    if iou is None:
        raise UnsupportedError(f"{what}: no nms iou_threshold.")
    return float(iou)


def rpn_block(rpn_head, test_rpn, levels):
    """tfdet's model.rpn block for an mmdet RPNHead dict and its test_cfg.rpn."""
    from tfdet.modeling.dense_heads import RPNSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    require(rpn_head.get("type"), ("RPNHead",), "rpn_head.type")
    require(int(rpn_head.get("num_convs", 1)), (1,), "rpn_head.num_convs")
    generator = rpn_head.get("anchor_generator") or {}
    convention = head_convention(generator, rpn_head.get("bbox_coder"), [2 ** lvl for lvl in levels], "rpn_head")
    if not close(coder_stds(rpn_head.get("bbox_coder"), "rpn_head.bbox_coder", (1.0,) * 4), (1.0,) * 4):
        raise UnsupportedError("rpn_head.bbox_coder.target_stds: tfdet's RPN decodes with stds 1.")
    test_rpn = test_rpn or {}
    if test_rpn.get("nms_across_levels"):
        raise UnsupportedError("test_cfg.rpn.nms_across_levels=True is not supported (NMS per level).")
    block = with_defaults(RPNSpec.DEFAULTS, levels=tuple(levels), feat_channels=int(rpn_head.get("feat_channels", 256)),
                          anchor_scales=tuple(float(s) for s in generator.get("scales", (8,))),
                          anchor_ratios=tuple(float(r) for r in generator.get("ratios", (0.5, 1.0, 2.0))),
                          pre_nms_top_k_test=int(test_rpn.get("nms_pre", 1000)),
                          max_proposals_test=int(test_rpn.get("max_per_img", test_rpn.get("max_num", 1000))),
                          nms_iou=nms_iou({"nms": {"iou_threshold": 0.7}, **test_rpn}, "test_cfg.rpn"),
                          min_size=float(test_rpn.get("min_bbox_size", 0)), box_convention=convention)
    block.pop("type")
    return block


def rpn_params(table, rpn_head, prefix="rpn_head"):
    """`rpn_head.*` keys: rpn_conv, rpn_cls (A sigmoid logits), rpn_reg (A * 4) -> tfdet rpn_head/*."""
    generator = rpn_head.get("anchor_generator") or {}
    anchors = len(generator.get("scales", (8,))) * len(generator.get("ratios", (0.5, 1.0, 2.0)))
    channels, feat = int(rpn_head.get("in_channels", 256)), int(rpn_head.get("feat_channels", 256))
    conv(table, f"{prefix}.rpn_conv", "rpn_head/rpn_conv", feat, channels, 3)
    conv(table, f"{prefix}.rpn_cls", "rpn_head/rpn_cls", anchors, feat, 1)
    conv(table, f"{prefix}.rpn_reg", "rpn_head/rpn_reg", 4 * anchors, feat, 1)


# -- RoI heads ---------------------------------------------------------------------------------------------

def roi_extractor(extractor, size, what):
    """(sampling_ratio, aligned) of an mmdet SingleRoIExtractor dict: RoIAlign of `size`, sampling ratio 0
    and aligned (2.x), or sampling ratio 2 and not aligned (configs/legacy_1.x), strides 4-32, finest scale 56
    (tfdet's MultiLevelRoIAlign)."""
    extractor = extractor or {}
    require(extractor.get("type", "SingleRoIExtractor"), ("SingleRoIExtractor",), f"{what}.type")
    layer = extractor.get("roi_layer") or {}
    require(layer.get("type", "RoIAlign"), ("RoIAlign",), f"{what}.roi_layer.type")
    require(int(layer.get("output_size", size)), (size,), f"{what}.roi_layer.output_size")
    pooling = (int(layer.get("sampling_ratio", 0)), bool(layer.get("aligned", True)))
    require(pooling, ((0, True), (2, False)), f"{what}.roi_layer.sampling_ratio / aligned")
    require(tuple(extractor.get("featmap_strides", (4, 8, 16, 32))), ((4, 8, 16, 32),), f"{what}.featmap_strides")
    require(int(extractor.get("finest_scale", 56)), (56,), f"{what}.finest_scale")
    return pooling


def shared2fc_settings(bbox_head, what):
    """(in_channels, roi size, fc channels, class agnostic, stds) of an mmdet Shared2FCBBoxHead dict."""
    require(bbox_head.get("type"), ("Shared2FCBBoxHead",), f"{what}.type")
    require(bool(bbox_head.get("reg_decoded_bbox", False)), (False,), f"{what}.reg_decoded_bbox")
    stds = coder_stds(bbox_head.get("bbox_coder"), f"{what}.bbox_coder", (0.1, 0.1, 0.2, 0.2))
    return (int(bbox_head.get("in_channels", 256)), int(bbox_head.get("roi_feat_size", 7)),
            int(bbox_head.get("fc_out_channels", 1024)), bool(bbox_head.get("reg_class_agnostic", False)), stds)


def shared2fc_params(table, bbox_head, num_classes, key="roi_head.bbox_head", path="bbox_head"):
    """A Shared2FCBBoxHead: shared_fcs.0 (rows permuted from the (C, H, W) flatten order), shared_fcs.1,
    fc_cls (num_classes + 1, background last as in tfdet), fc_reg (4 per class, or 4 class-agnostic)."""
    channels, size, fc, agnostic, _ = shared2fc_settings(bbox_head, key)
    linear(table, f"{key}.shared_fcs.0", f"{path}/fc1", fc, channels * size * size,
           transform=fc_chw_to_hwc(channels, size))
    linear(table, f"{key}.shared_fcs.1", f"{path}/fc2", fc, fc)
    linear(table, f"{key}.fc_cls", f"{path}/cls", num_classes + 1, fc)
    linear(table, f"{key}.fc_reg", f"{path}/reg", 4 if agnostic else 4 * num_classes, fc)


def fcn_mask_settings(mask_head, what):
    """(num_convs, in_channels, conv channels, class agnostic) of an mmdet FCNMaskHead dict (deconv or CARAFE x2)."""
    require(mask_head.get("type"), ("FCNMaskHead",), f"{what}.type")
    upsample = mask_head.get("upsample_cfg") or {"type": "deconv", "scale_factor": 2}
    require(upsample.get("type"), ("deconv", "carafe"), f"{what}.upsample_cfg.type")
    if upsample.get("type") == "carafe":
        from tfdet.zoo.mmdet import carafe  # pylint: disable=import-outside-toplevel
        carafe.carafe_settings(upsample, f"{what}.upsample_cfg")
    require(int(upsample.get("scale_factor", 2)), (2,), f"{what}.upsample_cfg.scale_factor")
    require(int(mask_head.get("conv_kernel_size", 3)), (3,), f"{what}.conv_kernel_size")
    return (int(mask_head.get("num_convs", 4)), int(mask_head.get("in_channels", 256)),
            int(mask_head.get("conv_out_channels", 256)), bool(mask_head.get("class_agnostic", False)))


def fcn_mask_params(table, mask_head, num_classes, key="roi_head.mask_head", path="mask_head"):
    """An FCNMaskHead: convs.i -> conv{i+1}, upsample (ConvTranspose 2x2/2) -> upsample, conv_logits -> logits
    (one channel per class, no background)."""
    num_convs, inp, channels, agnostic = fcn_mask_settings(mask_head, key)
    for i in range(num_convs):
        conv(table, f"{key}.convs.{i}.conv", f"{path}/conv{i + 1}", channels, inp if i == 0 else channels, 3)
    if (mask_head.get("upsample_cfg") or {}).get("type") == "carafe":
        from tfdet.zoo.mmdet import carafe  # pylint: disable=import-outside-toplevel
        carafe.carafe_params(table, f"{key}.upsample", f"{path}/upsample", channels)
    else:
        conv(table, f"{key}.upsample", f"{path}/upsample", channels, channels, 2)  # ConvTranspose [in, out]: square
    conv(table, f"{key}.conv_logits", f"{path}/logits", 1 if agnostic else num_classes, channels, 1)
