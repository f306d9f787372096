"""mmdetection detector checkpoints in tfdet: what a checkpoint is (its spec), the tfdet config that
reproduces it, and its weights under tfdet's weight paths. Numpy only (torch just to read .pth files).

    checkpoint = read_checkpoint("faster_rcnn_r50_fpn_1x_coco.pth")     # (state_dict, meta)
    spec = describe(checkpoint.meta, arch=None, state_dict=checkpoint.state_dict)
    config = tfdet_config(spec)                    # ml_collections: model, data, train blocks
    weights = convert(checkpoint.state_dict, spec)  # {tfdet weight path: array}

The spec (a JSON-able dict) says everything the conversion needs: "arch" (a name, e.g.
"mask_rcnn_x101_32x4d_fpn"), "family" (the registered family converting it), "model" (the mmdet model
dict: the config text's `model`, or what the arch name stands for; init_cfg / train_cfg / losses left
out), "input" (mean, std, bgr: channel order the model was trained on, pad_size_divisor), "test_scale",
"num_classes" (object classes of the checkpoint), "class_names" (the meta's, or None); for the families whose
conversion depends on it (Family.versioned: HTC) "mmdet_version" (the meta's; None for 3.x files); and
"mmdet_v1": true for an mmdetection 1.x file (legacy_v1.py: its weights are moved to the 2.x layout, its
model is the configs/legacy_1.x one; absent otherwise). The architecture,
the backbone (depth, groups, base_width, style, dcn) and the test settings come from the checkpoint's
config text (meta["config"] 2.x / meta["cfg"] 3.x; read with ast, literals only: pyconfig.py); without
one the arch name is required (registry.parse_arch: e.g. faster_rcnn_r50_fpn, mask_rcnn_x101_32x4d_fpn,
retinanet_r50_caffe_fpn, faster_rcnn_r50_dconv_c3-c5_fpn). pytorch and caffe style have identical keys:
the style comes from the config or the name, never from the keys.

Layouts: mmdet 2.x and 3.x files have the same keys but for the RPN detectors (3.x `bbox_head.`, 2.x
`rpn_head.`); canonical() reads both. BN's num_batches_tracked is dropped. mmdet 1.x files (meta
mmdet_version < 2, or the 1.x two-stage layout: `bbox_head.` next to `rpn_head.`): legacy_v1.py.

Conventions the config reproduces (tools/zoo_reference/mmdet_conventions.md): images normalized then
zero-padded (model.zero_padding_after_normalize), padded to pad_size_divisor (data.pad_to_multiple);
caffe-style (BGR) models: conv1's input channels reversed and mean / std reversed, so tfdet feeds RGB;
fc6's input rows permuted from torch's (C, H, W) flatten to tfdet's (H, W, C); RetinaNet's P6 from C5 with
no ReLU before P7, top-k (anchor, class) pairs (retina.topk_mode) and w, h > min_bbox_size
(retina.min_size); test_cfg's thresholds (score_thr, nms, max_per_img, nms_pre, mask_thr_binary).
config.data.class_names (the meta's class names) and config.data.category_ids (COCO's category ids when
the names are COCO's 80, else 1..K) name the classes.

Adding a family (a module of this package, imported at the end of this file): build a
registry.Family and register_family() it.
  name           the arch names' prefix ("cascade_rcnn"); arch_flags: extra name tokens it takes
  matches        (mmdet model dict) -> bool; exactly one registered family may accept a model
  mmdet_model    (registry.ArchName) -> the mmdet model dict of an arch name (backbone: arch.backbone())
  tfdet_model    (spec, num_classes) -> tfdet's model block without pixel_mean / pixel_std /
                 zero_padding_after_normalize / ops_impl (added here)
  params         (spec, num_classes) -> {mmdet 2.x key: common.Param(torch shape, tfdet weight path,
                 transform)}: the one table of expected keys, shapes and key -> weight mapping; compose the
                 shared parts: common.backbone_params / fpn_params / rpn_params / shared2fc_params (any key
                 prefix and tfdet layer, e.g. roi_head.bbox_head.0 -> bbox_head1) / fcn_mask_params, and
                 the blocks common.backbone_block / fpn_block / rpn_block, two_stage.roi_block / mask_block
  source_classes (state_dict) -> the checkpoint's object classes (used when there is no config), or None
  class_layers   tfdet path prefixes of its class-specific layers (--num_classes re-initializes them)
  rpn_detector   True for RPN-only detectors (3.x `bbox_head.` layout)
  model_flags    (mmdet model dict) -> the arch_flags a config's model has (its spec's arch name)
  versioned      True when the conversion depends on the mmdet version (the spec's "mmdet_version")
CARAFE (FPN_CARAFE, CARAFE mask heads; carafe.py) is a variant of the neck and mask head that the shared
FPN and FCN mask tables dispatch to, so that every family has it; carafe.with_carafe makes an arch name's
model the CARAFE variant ("carafe" flag).
Settings tfdet cannot reproduce raise common.UnsupportedError naming the config field.
"""

import copy
import json

import ml_collections
import numpy as np

from tfdet.zoo import classes as class_space
from tfdet.zoo.mmdet import common, labels, legacy_v1
from tfdet.zoo.mmdet.checkpoint import Checkpoint, class_names, config_text, read_checkpoint
from tfdet.zoo.mmdet.pyconfig import UNREADABLE, parse_config
from tfdet.zoo.mmdet.registry import FAMILIES, ArchName, Family, family_of, parse_arch, register_family

DEFAULT_TEST_SCALE = (1333, 800)
_DROPPED = ("init_cfg", "train_cfg", "pretrained")


def _prune(value):
    """A JSON-able copy of an mmdet config value without init_cfg / train_cfg / pretrained / loss_* entries."""
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if k not in _DROPPED and not str(k).startswith("loss_")}
    if isinstance(value, (list, tuple)):
        return [_prune(v) for v in value]
    return value


def _find(value, predicate):
    """The first dict inside `value` (depth first) for which predicate(dict) holds, or None."""
    if isinstance(value, dict):
        if predicate(value):
            return value
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _find(item, predicate)
            if found is not None:
                return found
    return None


def _input_of(parsed, model, arch):
    """The spec's input (normalization, channel order, padding) from a parsed config: 3.x
    model.data_preprocessor, 2.x img_norm_cfg and the test pipeline's Pad; else the backbone style's."""
    style_input = arch.input()
    pre = model.get("data_preprocessor") or parsed.get("data_preprocessor")
    norm = parsed.get("img_norm_cfg")
    pipeline = parsed.get("test_pipeline")
    if isinstance(pre, dict) and pre.get("mean") is not None:
        return dict(mean=[float(v) for v in pre["mean"]], std=[float(v) for v in pre.get("std", (1.0,) * 3)],
                    bgr=not pre.get("bgr_to_rgb", pre.get("rgb_to_bgr", False)),
                    pad_size_divisor=int(pre.get("pad_size_divisor", 1) or 1))
    if isinstance(norm, dict) and norm.get("mean") is not None:
        pad = _find(pipeline, lambda d: d.get("type") == "Pad") if pipeline is not UNREADABLE else None
        return dict(mean=[float(v) for v in norm["mean"]], std=[float(v) for v in norm.get("std", (1.0,) * 3)],
                    bgr=not norm.get("to_rgb", True), pad_size_divisor=int((pad or {}).get("size_divisor", 32)))
    return style_input


def _test_scale(parsed):
    pipeline = parsed.get("test_pipeline")
    if pipeline is UNREADABLE or pipeline is None:
        return DEFAULT_TEST_SCALE
    found = _find(pipeline, lambda d: d.get("type") in ("Resize", "MultiScaleFlipAug") and
                  isinstance(d.get("scale", d.get("img_scale")), (list, tuple)))
    scale = None if found is None else found.get("scale", found.get("img_scale"))
    if scale and isinstance(scale[0], (list, tuple)):
        scale = scale[0] if len(scale) == 1 else None
    return tuple(int(s) for s in scale) if scale and len(scale) == 2 else DEFAULT_TEST_SCALE


def _arch_of_model(model):
    """An ArchName describing an mmdet model dict's backbone (for the spec's name)."""
    depth, groups, base_width, style, dcn, _ = common.backbone_settings(model["backbone"])
    return ArchName(family="", depth=depth, groups=groups, base_width=base_width, style=style,
                    dcn=None if not dcn else ("DCNv2" if dcn["modulated"] else "DCN"))


def describe(meta=None, arch=None, state_dict=None):
    """The spec (module docstring) of a checkpoint: from its meta's config text when it has one (`arch`, if
    given, must then name the same family and backbone), else from the arch name, which is then required.
    `state_dict` tells the number of classes when there is no config."""
    meta = meta or {}
    text = config_text(meta)
    if text is None and not arch:
        raise ValueError("the checkpoint has no config text in its meta (meta['config'] / meta['cfg']), so its "
                         "architecture and backbone style cannot be known from it: pass --arch, e.g. "
                         "faster_rcnn_r50_fpn, mask_rcnn_x101_32x4d_fpn, retinanet_r50_caffe_fpn, "
                         "faster_rcnn_r50_dconv_c3-c5_fpn (families: " + ", ".join(FAMILIES) + ").")
    named = parse_arch(arch) if arch else None
    parsed = parse_config(text) if text is not None else {}
    model = parsed.get("model")
    v1 = legacy_v1.is_v1(meta, state_dict)
    if v1 and isinstance(model, dict):
        model = legacy_v1.as_legacy(legacy_v1.translate(model, parsed.get("test_cfg")))
    if text is not None and not isinstance(model, dict) and named is None:
        raise ValueError("the checkpoint's config text has no readable `model = dict(...)` (only literal values "
                         "are read): pass --arch, which then describes the model instead.")
    if isinstance(model, dict):
        model = _prune(model)
        if "test_cfg" not in model and isinstance(parsed.get("test_cfg"), dict):  # early 2.x: top-level test_cfg
            model["test_cfg"] = _prune(parsed["test_cfg"])
        family = family_of(model)
        from_model = _arch_of_model(model)
        name = ArchName(family=family.name, **{k: getattr(from_model, k) for k in
                                                ("depth", "groups", "base_width", "style", "dcn")},
                        flags=named.flags if named else tuple(family.model_flags(model)))
        if named is not None and named.name() != name.name():
            raise ValueError(f"--arch {arch} ({named.name()}) contradicts the checkpoint's config ({name.name()}); "
                             "drop --arch, or pass the arch the config describes.")
        spec_input, test_scale = _input_of(parsed, model, name), _test_scale(parsed)
        num_classes = _config_classes(model)
    else:
        family, name = FAMILIES[named.family], named
        model = _prune(family.mmdet_model(named))
        if v1:
            legacy_v1.require_family(family.name)
            model = legacy_v1.as_legacy(model, legacy_v1.LEGACY_SAMPLING_RATIO)
        spec_input, test_scale = _input_of({}, model, named), DEFAULT_TEST_SCALE  # the family's preprocessor, if any
        num_classes = None
    model.pop("data_preprocessor", None)
    if family.rpn_detector:
        num_classes = 1  # proposals: one class
    elif num_classes is None:
        found = family.source_classes(canonical(state_dict, family, v1)) if state_dict is not None else None
        num_classes = found or _config_classes(model) or len(labels.COCO_CLASSES)
    names = None if family.rpn_detector else class_names(meta)
    if names is not None and len(names) != num_classes:
        raise ValueError(f"the checkpoint's meta names {len(names)} classes but its model has {num_classes}.")
    spec = dict(arch=name.name(), family=family.name, model=model, input=spec_input, test_scale=list(test_scale),
                num_classes=int(num_classes), class_names=names, **({"mmdet_v1": True} if v1 else {}))
    if family.versioned:
        spec["mmdet_version"] = meta.get("mmdet_version")
    return json.loads(json.dumps(spec))  # plain lists and dicts, as the written config.py has them


def _config_classes(model):
    """num_classes of an mmdet model dict's class head (None for RPN detectors)."""
    head = _find({k: v for k, v in model.items() if k in ("roi_head", "bbox_head")},
                 lambda d: "num_classes" in d)
    return None if head is None else int(head["num_classes"])


# -- Weights --------------------------------------------------------------------------------------------------

def canonical(state_dict, family, v1=False):
    """{mmdet 2.x key: float32 array} of a 2.x or 3.x state dict (torch tensors or arrays), or with v1 of a
    1.x one (legacy_v1.upgrade); counters dropped."""
    keys = list(state_dict)
    rename = family.rpn_detector and any(k.startswith("bbox_head.") for k in keys) and \
        not any(k.startswith("rpn_head.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in common.IGNORED_LEAVES:
            continue
        if rename and key.startswith("bbox_head."):
            key = "rpn_head." + key[len("bbox_head."):]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[key] = value.astype(np.float32)
    return legacy_v1.upgrade(out, family.name) if v1 else out


def params(spec, num_classes=None):
    """{mmdet key: common.Param} of a spec with `num_classes` (default the spec's)."""
    return FAMILIES[spec["family"]].params(spec, spec["num_classes"] if num_classes is None else int(num_classes))


def expected_shapes(spec, num_classes=None):
    """{mmdet 2.x key: torch shape} of a spec's checkpoint."""
    return {k: tuple(p.shape) for k, p in params(spec, num_classes).items()}


def check_state_dict(state_dict, spec):
    """The canonical state dict of `spec`'s checkpoint; one ValueError listing every missing, unexpected and
    mis-shaped key otherwise."""
    sd = canonical(state_dict, FAMILIES[spec["family"]], bool(spec.get("mmdet_v1")))
    want = expected_shapes(spec)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    misshaped = sorted(f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in set(want) & set(sd)
                       if tuple(sd[k].shape) != tuple(want[k]))
    problems = [f"{what} ({len(keys)}): " + ", ".join(keys) for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise ValueError(f"the state dict is not an mmdetection {spec['arch']} checkpoint with {spec['num_classes']} "
                         f"classes ({'; '.join(problems)}); is it another architecture (--arch, or the config in "
                         "its meta)?")
    return sd


def class_layers(spec):
    """The tfdet path prefixes of `spec`'s class-specific layers: its family's, but class-agnostic box
    regressors (reg_class_agnostic, e.g. every cascade stage's), which fit any class set."""
    agnostic = _find(spec["model"], lambda d: "reg_class_agnostic" in d)
    return tuple(p for p in FAMILIES[spec["family"]].class_layers
                 if not (agnostic and agnostic["reg_class_agnostic"] and p.rstrip("/").endswith("/reg")))


def convert(state_dict, spec, num_classes=None, classes=None):
    """{tfdet weight path: array} of an mmdet state dict of `spec` (tfdet_config(spec, num_classes, classes)
    builds the model they fit). With `num_classes` other than the spec's, the family's class layers are left
    out (the model keeps their initial values: fine-tuning on other categories). With `classes` (the spec's
    class indices, tfdet.zoo.classes.class_indices of source_classes(spec)), the class layers keep those
    classes' channels, in that order."""
    if classes is not None and num_classes is not None:
        raise ValueError("give num_classes (other categories) or classes (a subset of the source's), not both.")
    sd = check_state_dict(state_dict, spec)
    layers = class_layers(spec)
    reinit = num_classes is not None and int(num_classes) != spec["num_classes"]
    out = {}
    for key, param in params(spec).items():
        if reinit and param.path.startswith(layers):
            continue
        out[param.path] = np.ascontiguousarray(param.transform(sd[key]), np.float32)
    if classes is not None:
        present = [p for p in layers if any(k.startswith(p) for k in out)]  # e.g. Faster R-CNN: no mask head
        out = class_space.select_classes(out, class_space.layer_kinds(present), classes, spec["num_classes"])
    return out


# -- The config -------------------------------------------------------------------------------------------------

def source_classes(spec):
    """(category_ids, class_names) of the checkpoint's classes: its meta's names (mmdet's COCO names for an
    80-class checkpoint without names), COCO's ids for COCO's names, else 1..K (labels.category_ids)."""
    names = spec.get("class_names")
    source = int(spec["num_classes"])
    if names is None and source == len(labels.COCO_CLASSES) and not FAMILIES[spec["family"]].rpn_detector:
        names = list(labels.COCO_CLASSES)  # mmdet's own fallback for checkpoints without class names
    return labels.category_ids(names, source), None if names is None else list(names)


def tfdet_config(spec, num_classes=None, classes=None):
    """The full tfdet config (model, data, train) reproducing `spec`'s mmdetection model, with `num_classes`
    object classes (default the checkpoint's), or the checkpoint's classes `classes` (class indices, in
    their new order: convert's)."""
    from tfdet.zoo import torchvision  # pylint: disable=import-outside-toplevel  (shared data / train blocks)

    family = FAMILIES[spec["family"]]
    source = int(spec["num_classes"])
    ids, names = source_classes(spec)
    if classes is not None:
        if num_classes is not None:
            raise ValueError("give num_classes (other categories) or classes (a subset of the source's), not both.")
        ids, names = [ids[c] for c in classes], None if names is None else [names[c] for c in classes]
        num_classes = len(classes)
    elif num_classes is not None and int(num_classes) != source:
        ids, names = None, None
    n = source if num_classes is None else int(num_classes)
    model = family.tfdet_model(copy.deepcopy(spec), n)
    order = slice(None, None, -1) if spec["input"]["bgr"] else slice(None)
    model.update(pixel_mean=tuple(float(v) for v in spec["input"]["mean"][order]),
                 pixel_std=tuple(float(v) for v in spec["input"]["std"][order]), ops_impl=None,
                 zero_padding_after_normalize=True)
    blocks = torchvision._run_blocks("mask" in model, False)  # pylint: disable=protected-access
    # mmdet pads each batch to its largest image rounded up to pad_size_divisor (serving_pad "batch"); its
    # resize rounds sizes half up, tfdet's "round" half to even: the same but for exact ties.
    blocks["data"].update(scale=tuple(spec["test_scale"]), pad_to_multiple=int(spec["input"]["pad_size_divisor"]),
                          serving_pad="batch", category_ids=ids, class_names=names)
    return ml_collections.ConfigDict(dict(model=model, **blocks))


# The families (each module registers its own).
from tfdet.zoo.mmdet import two_stage  # noqa: E402,F401  pylint: disable=wrong-import-position
from tfdet.zoo.mmdet import retina  # noqa: E402,F401  pylint: disable=wrong-import-position
from tfdet.zoo.mmdet import guided  # noqa: E402,F401  pylint: disable=wrong-import-position
from tfdet.zoo.mmdet import cascade  # noqa: E402,F401  pylint: disable=wrong-import-position

__all__ = ["FAMILIES", "ArchName", "Checkpoint", "Family", "canonical", "check_state_dict", "convert", "describe",
           "class_layers", "expected_shapes", "params", "parse_arch", "read_checkpoint", "register_family", "source_classes",
           "tfdet_config"]
