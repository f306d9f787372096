"""The family registry and the arch names (the package docstring of tfdet.zoo.mmdet describes both)."""

import dataclasses
import re
from typing import Callable

FAMILIES = {}  # name -> Family, in registration order


@dataclasses.dataclass(frozen=True)
class Family:
    """How one kind of mmdetection detector converts (tfdet.zoo.mmdet docstring: "Adding a family").

    name            the arch names' prefix, e.g. "faster_rcnn" (arch "faster_rcnn_r50_fpn")
    matches         (mmdet model dict) -> bool: this family converts that model (exactly one family may match)
    mmdet_model     (ArchName) -> the mmdet model dict the arch name stands for (mmdetection's config of it,
                    test_cfg included; what a checkpoint without a config is taken to be)
    tfdet_model     (spec, num_classes) -> tfdet's model block (dict) but pixel_mean / pixel_std /
                    zero_padding_after_normalize / ops_impl, which the package adds
    params          (spec, num_classes) -> {mmdet key (2.x layout): common.Param(shape, tfdet path, transform)}
    source_classes  (state_dict) -> object classes of a checkpoint (read off its classifier), or None
    class_layers    tfdet path prefixes of the class-specific layers (re-initialized by --num_classes)
    arch_flags      extra arch-name tokens the family takes (kept in ArchName.flags), e.g. ("carafe",)
    model_flags     (mmdet model dict) -> the arch_flags that a model from a config text has
    versioned       the conversion depends on the mmdet version that wrote the checkpoint: the spec then holds
                    meta["mmdet_version"] as "mmdet_version" (2.x files have one; 3.x files none: None)
    rpn_detector    an RPN-only detector: mmdet 3.x names its head `bbox_head.` (2.x `rpn_head.`)
    """

    name: str
    matches: Callable
    mmdet_model: Callable
    tfdet_model: Callable
    params: Callable
    source_classes: Callable
    class_layers: tuple = ()
    arch_flags: tuple = ()
    model_flags: Callable = lambda model: ()
    versioned: bool = False
    rpn_detector: bool = False


def register_family(family):
    """Adds `family` to FAMILIES (a name is registered once)."""
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"mmdet family {family.name!r} is already registered.")
    FAMILIES[family.name] = family
    return family


def family_of(model):
    """The one registered family whose `matches` accepts an mmdet model dict."""
    found = [f for f in FAMILIES.values() if f.matches(model)]
    if len(found) != 1:
        parts = {k: (v.get("type") if isinstance(v, dict) else v) for k, v in model.items()
                 if k in ("type", "rpn_head", "roi_head", "bbox_head", "neck")}
        if not found:
            raise ValueError(f"no mmdet converter for the model {parts}; supported families: {', '.join(FAMILIES)}.")
        raise AssertionError(f"mmdet families {[f.name for f in found]} all match {parts}.")
    return found[0]


# -- Arch names -----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ArchName:
    """An arch name's parts: "mask_rcnn_x101_32x4d_caffe_mdconv_c3-c5_fpn" -> family "mask_rcnn", depth 101,
    groups 32, base_width 4, style "caffe", dcn "DCNv2"."""

    family: str
    depth: int = 50
    groups: int = 1
    base_width: int = 64
    style: str = "pytorch"
    dcn: str = None          # None | "DCN" (dconv) | "DCNv2" (mdconv), in stages c3-c5
    flags: tuple = ()        # family-specific tokens (Family.arch_flags)

    def backbone(self):
        """The mmdet backbone dict the name stands for (mmdetection's configs)."""
        out = dict(type="ResNeXt" if self.groups > 1 else "ResNet", depth=self.depth, num_stages=4,
                   out_indices=(0, 1, 2, 3), frozen_stages=1,
                   norm_cfg=dict(type="BN", requires_grad=self.style != "caffe"),
                   norm_eval=True, style=self.style)
        if self.groups > 1:
            out.update(groups=self.groups, base_width=self.base_width)
        if self.dcn:
            out.update(dcn=dict(type=self.dcn, deform_groups=1, fallback_on_stride=False),
                       stage_with_dcn=(False, True, True, True))
        return out

    def input(self):
        """Normalization and channel order of the name's style: caffe BGR, mean only; pytorch RGB."""
        if self.style == "caffe":
            return dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr=True, pad_size_divisor=32)
        return dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr=False, pad_size_divisor=32)

    def name(self):
        backbone = f"r{self.depth}" if self.groups == 1 else f"x{self.depth}_{self.groups}x{self.base_width}d"
        parts = [self.family, backbone] + (["caffe"] if self.style == "caffe" else [])
        if self.dcn:
            parts.append(("mdconv" if self.dcn == "DCNv2" else "dconv") + "_c3-c5")
        return "_".join(parts + ["fpn"] + list(self.flags))


_SCHEDULE = re.compile(r"^(\d+x|\d+e|coco|mstrain.*|ms|lsj|amp|fp16)$")


def parse_arch(name):
    """ArchName of an mmdetection-style arch name (2.x "faster_rcnn_r50_fpn_dconv_c3-c5_1x_coco", 3.x
    "faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco" or the short "faster_rcnn_r50_dconv_c3-c5_fpn"): family prefix,
    backbone r50 | r101 | x101_32x4d | x101_64x4d, optional caffe, optional dconv_c3-c5 / mdconv_c3-c5, fpn,
    the family's flags; schedule / dataset suffixes (1x, 2x, 20e, coco, mstrain...) are ignored."""
    text = name.strip().lower().replace("-", "_").replace("c3_c5", "c3-c5")
    family = max((f for f in FAMILIES if text == f or text.startswith(f + "_")), key=len, default=None)
    if family is None:
        raise ValueError(f"--arch {name!r}: unknown family; arch names start with one of {', '.join(FAMILIES)} "
                         "(e.g. faster_rcnn_r50_fpn, mask_rcnn_x101_32x4d_fpn, retinanet_r50_caffe_fpn, "
                         "faster_rcnn_r50_dconv_c3-c5_fpn).")
    tokens = [t for t in text[len(family):].split("_") if t]
    fields, flags, unknown, has_fpn = {"family": family}, [], [], False
    i = 0
    while i < len(tokens):
        token, nxt = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if re.fullmatch(r"r(50|101|152)", token):
            fields["depth"] = int(token[1:])
        elif re.fullmatch(r"x(50|101|152)", token) and re.fullmatch(r"(\d+)x(\d+)d", nxt):
            groups, width = re.fullmatch(r"(\d+)x(\d+)d", nxt).groups()
            fields.update(depth=int(token[1:]), groups=int(groups), base_width=int(width))
            i += 1
        elif token == "caffe":
            fields["style"] = "caffe"
        elif token in ("dconv", "mdconv") and nxt == "c3-c5":
            fields["dcn"] = "DCN" if token == "dconv" else "DCNv2"
            i += 1
        elif token == "fpn":
            has_fpn = True
        elif token in FAMILIES[family].arch_flags:
            flags.append(token)
        elif not _SCHEDULE.match(token):
            unknown.append(token)
        i += 1
    flags_hint = FAMILIES[family].arch_flags
    if unknown or not has_fpn or "depth" not in fields:
        raise ValueError(f"--arch {name!r}: " + (f"unknown part(s) {unknown}; " if unknown else "") +
                         ("" if has_fpn else "no 'fpn' part; ") + ("" if "depth" in fields else "no backbone part; ") +
                         "expected <family>_<r50|r101|x101_32x4d|x101_64x4d>[_caffe][_dconv_c3-c5|_mdconv_c3-c5]_fpn"
                         + (f" with optional {list(flags_hint)}" if flags_hint else "")
                         + ".")
    return ArchName(flags=tuple(flags), **fields)
