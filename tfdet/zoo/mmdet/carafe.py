"""CARAFE in mmdetection checkpoints (mmdetection configs/carafe: FPN_CARAFE and the FCN mask head's CARAFE
upsampler; tools/zoo_reference/mmdet_conventions.md 2.3, 2.10).

FPN_CARAFE: laterals on C2-C5 and a 5th, a 3x3 / 2 conv on C5, in the top-down path through 4 CARAFE
upsamplers, an output conv on each (P6 included): tfdet's FPN(extra="carafe_lateral", upsample="carafe").
Keys: neck.lateral_convs.i -> fpn/lateral{l}, neck.fpn_convs.i -> fpn/output{l} (i = 4: level 6),
neck.upsample_modules.i -> fpn/upsample{l} (i = l - 2: upsamples level l + 1 into level l).
Mask head: roi_head.mask_head.upsample -> mask_head/upsample (a CARAFEUpsample; mmdet has no ReLU after it,
tfdet's is the identity there: CARAFE's output is a convex combination of post-ReLU features).
An mmcv CARAFEPack's content encoder orders its output channels (tap, sub-pixel), tfdet's (sub-pixel, tap):
the converter reorders them (encoder_kernel / encoder_bias)."""

import functools

from tfdet.zoo.mmdet import common

# tfdet's CARAFEUpsample defaults, which FPN and MaskHead use (mmdetection's configs/carafe).
CARAFE = dict(up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1, compressed_channels=64)
PAD_SIZE_DIVISOR = 64  # mmdetection's CARAFE configs pad to 64


def carafe_settings(cfg, what):
    """Checks an mmdet CARAFE upsample_cfg against tfdet's CARAFEUpsample (scale 2, CARAFE's defaults)."""
    common.require(cfg.get("type"), ("carafe",), f"{what}.type")
    common.require(int(cfg.get("scale_factor", 2)), (2,), f"{what}.scale_factor")
    for name, value in CARAFE.items():
        common.require(int(cfg.get(name, value)), (value,), f"{what}.{name}")


def _subpixel_major(w, scale):
    """mmcv's encoder output channels (tap * s*s + sub-pixel) reordered as tfdet's (sub-pixel * taps + tap)."""
    subpixels = scale * scale
    return w.reshape(-1, subpixels, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def encoder_kernel(w, scale=2):
    return common.conv_kernel(_subpixel_major(w, scale))


def encoder_bias(b, scale=2):
    return _subpixel_major(b, scale)


def carafe_params(table, key, path, channels, scale=2):
    """An mmcv CARAFEPack `key` (channel_compressor, content_encoder) -> the CARAFEUpsample at `path`."""
    k, taps = CARAFE["encoder_kernel"], CARAFE["up_group"] * CARAFE["up_kernel"] ** 2
    compressed = CARAFE["compressed_channels"]
    common.conv(table, f"{key}.channel_compressor", f"{path}/channel_compressor", compressed, channels, 1)
    out = scale * scale * taps
    table[f"{key}.content_encoder.weight"] = common.Param((out, compressed, k, k), f"{path}/content_encoder/kernel",
                                                          functools.partial(encoder_kernel, scale=scale))
    table[f"{key}.content_encoder.bias"] = common.Param((out,), f"{path}/content_encoder/bias",
                                                        functools.partial(encoder_bias, scale=scale))


# -- FPN_CARAFE ---------------------------------------------------------------------------------------------------

def fpn_levels(neck):
    """(backbone levels, extra levels) of an mmdet FPN_CARAFE dict."""
    common.require(neck.get("type"), ("FPN_CARAFE",), "model.neck.type")
    inputs = len(neck.get("in_channels", (256, 512, 1024, 2048)))
    common.require(int(neck.get("start_level", 0)), (0,), "model.neck.start_level")
    common.require(int(neck.get("end_level", -1)), (-1, inputs - 1), "model.neck.end_level")
    if neck.get("norm_cfg") or neck.get("act_cfg"):
        raise common.UnsupportedError("model.neck.norm_cfg / act_cfg are not supported (plain FPN_CARAFE convs only).")
    carafe_settings(neck.get("upsample_cfg") or {"type": "carafe"}, "model.neck.upsample_cfg")
    levels = list(range(2, 2 + inputs))
    return levels, list(range(levels[-1] + 1, 2 + int(neck.get("num_outs", inputs))))


def fpn_block(neck):
    """tfdet's neck block for an mmdet FPN_CARAFE dict."""
    from tfdet.modeling.necks import FPN_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    levels, extra = fpn_levels(neck)
    block = with_defaults(FPN_DEFAULTS, out_channels=int(neck.get("out_channels", 256)), min_level=levels[0],
                          max_level=(extra or levels)[-1], extra="carafe_lateral", upsample="carafe")
    block.pop("type")
    return block


def fpn_params(table, neck):
    """`neck.*` keys of an mmdet FPN_CARAFE (module docstring)."""
    levels, extra = fpn_levels(neck)
    in_channels = list(neck.get("in_channels", (256, 512, 1024, 2048)))
    out = int(neck.get("out_channels", 256))
    for i, level in enumerate(levels + extra):
        if level in levels:
            common.conv(table, f"neck.lateral_convs.{i}.conv", f"{common.NECK_NAME}/lateral{level}", out,
                        in_channels[i], 1)
        else:  # 3x3 / 2 on C_top, then on the previous extra lateral
            inp = in_channels[-1] if level == levels[-1] + 1 else out
            common.conv(table, f"neck.lateral_convs.{i}.conv", f"{common.NECK_NAME}/lateral{level}", out, inp, 3)
        common.conv(table, f"neck.fpn_convs.{i}.conv", f"{common.NECK_NAME}/output{level}", out, out, 3)
        if i < len(levels + extra) - 1:
            carafe_params(table, f"neck.upsample_modules.{i}", f"{common.NECK_NAME}/upsample{level}", out)


# -- The mask head's upsampler and the arch flag ----------------------------------------------------------------

def mask_upsample(mask_head, what):
    """tfdet's mask.upsample ("deconv" | "carafe") of an mmdet FCN mask head dict's upsample_cfg."""
    upsample = mask_head.get("upsample_cfg") or {"type": "deconv"}
    if upsample.get("type") != "carafe":
        return "deconv"
    carafe_settings(upsample, f"{what}.upsample_cfg")
    return "carafe"


def _mask_heads(model):
    heads = (model.get("roi_head") or {}).get("mask_head") or []
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def model_flags(model):
    """("carafe",) for an mmdet model dict with FPN_CARAFE or CARAFE mask heads (the arch name's flag), else ()."""
    neck = (model.get("neck") or {}).get("type") == "FPN_CARAFE"
    masks = any((h.get("upsample_cfg") or {}).get("type") == "carafe" for h in _mask_heads(model))
    return ("carafe",) if neck or masks else ()


def with_carafe(model, arch):
    """An arch name's mmdet model dict, made mmdetection's CARAFE variant when the name has the "carafe" flag
    (configs/carafe: FPN_CARAFE, CARAFE mask heads, padding to 64)."""
    if "carafe" not in arch.flags:
        return model
    neck = model["neck"]
    model["neck"] = dict(type="FPN_CARAFE", in_channels=neck["in_channels"], out_channels=neck["out_channels"],
                         num_outs=neck["num_outs"], start_level=0, end_level=-1, norm_cfg=None, act_cfg=None,
                         order=("conv", "norm", "act"), upsample_cfg=dict(type="carafe", **CARAFE))
    for head in _mask_heads(model):  # dicts shared by the stages of a cascade: updated once each
        head["upsample_cfg"] = dict(type="carafe", scale_factor=2, **CARAFE)
    style = arch.input()
    model["data_preprocessor"] = dict(type="DetDataPreprocessor", mean=style["mean"], std=style["std"],
                                      bgr_to_rgb=not style["bgr"], pad_size_divisor=PAD_SIZE_DIVISOR)
    return model
