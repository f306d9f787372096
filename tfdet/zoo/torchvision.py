"""torchvision detector checkpoints in tfdet: the architecture of a state dict, the tfdet config that
reproduces it, and its weights under tfdet's weight paths. Pure functions on numpy arrays (no torch).

    arch = detect_arch(state_dict)                  # e.g. "maskrcnn_resnet50_fpn"
    config = tfdet_config(arch)                     # ml_collections: model, data, train blocks
    weights = convert(state_dict, arch)             # {tfdet weight path: array}

The conventions (tools/zoo_reference/torchvision_conventions.md) the config reproduces: FrozenBN epsilon
0, input normalized then zero-padded, anchors of absolute sizes rounded to whole pixels with strides
padded size // feature size, the box coder clamped from above only, proposals with sides >= 1e-3,
detections with sides >= 1e-2, RoIAlign aligned=False with sampling ratio 2, torchvision's mask pasting
and keypoint decoding.
The converter moves torchvision's background class 0 last (tfdet class c is torchvision label c + 1,
the COCO category id c + 1), permutes fc6's input rows from (C, H, W) to tfdet's (H, W, C) flatten
order, and accepts the key names of the released v1 files (before torchvision's renames).

Supported: fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn, keypointrcnn_resnet50_fpn (keypoints decoded
with torchvision's bicubic rule; one class, person), fasterrcnn_resnet50_fpn_v2 and maskrcnn_resnet50_fpn_v2
(BatchNorm backbone and FPN, a 2-conv RPN head, a 4-conv + 1-fc box head with BN, a mask head with BN).
retinanet_resnet50_fpn: all 91 sigmoid channels are kept (class 0, never a positive in training, still
competes at inference in torchvision), so there tfdet class c IS torchvision label c = COCO id c (the
config's data.category_ids 0..90); the top 1000 (anchor, class) pairs per level and 300 detections.
retinanet_resnet50_fpn_v2: the same anchors, box coder and post-processing; a BatchNorm backbone (eps
1e-5), P6 from C5 (v1: from P5), head tower convs without bias + GroupNorm(32) (retina.norm="gn"). Its
GIoU regression loss is training-only: the converted config trains with tfdet's RetinaNet losses.
The config's data.category_ids / class_names name the classes (COCO ids and names; torchvision's unused
ids "N/A"); `classes` keeps a subset of them (tfdet.zoo.classes.select_classes on CLASS_LAYER_KINDS).
"""

import re

import ml_collections
import numpy as np

from tfdet.zoo import classes as class_space

SUPPORTED = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
             "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn",
             "retinanet_resnet50_fpn_v2")
SOURCE_CLASSES = {"keypointrcnn_resnet50_fpn": 2}  # labels incl. background; the others COCO_CLASSES
COCO_CLASSES = 91  # torchvision's COCO label space: 0 = background, 1..90 = COCO category ids
BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
IGNORED = ("num_batches_tracked",)
STAGES = (3, 4, 6, 3)  # ResNet-50 blocks per stage
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
RETINA_ANCHOR_SIZES = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
RETINA_ANCHORS = 9

# Names of the released v1 checkpoint files, undone by torchvision's _load_from_state_dict hooks:
# (pattern, the current name of a match).
_LEGACY = [
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), lambda m: f"rpn.head.conv.0.0.{m[1]}"),
    (re.compile(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"),
     lambda m: f"backbone.fpn.{m[1]}_blocks.{m[2]}.0.{m[3]}"),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}"),
    (re.compile(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)$"),  # conv + ReLU pairs
     lambda m: f"head.{m[1]}_head.conv.{int(m[2]) // 2}.0.{m[3]}")]


def _current_name(key):
    """The current torchvision name of a (possibly legacy) state-dict key."""
    for pattern, current in _LEGACY:
        match = pattern.match(key)
        if match:
            return current(match)
    return key


def canonical(state_dict):
    """{current key: float32 array} of a state dict (torch tensors or arrays); counters dropped."""
    out = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in IGNORED:
            continue
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[_current_name(key)] = value.astype(np.float32)
    return out


def detect_arch(state_dict_keys):
    """The torchvision architecture name (one of SUPPORTED) of a state dict's keys (or the dict)."""
    keys = {_current_name(k) for k in state_dict_keys}
    if not any(k.startswith("backbone.body.layer4.") for k in keys):
        raise ValueError("detect_arch: not a torchvision ResNet-50 FPN detector state dict (no "
                         "backbone.body.layer4.* keys); pass --arch, one of " + ", ".join(SUPPORTED) + ".")
    if any(k.startswith("head.classification_head.") for k in keys):
        return "retinanet_resnet50_fpn_v2" if "head.classification_head.conv.0.1.weight" in keys \
            else "retinanet_resnet50_fpn"
    if any(k.startswith("roi_heads.keypoint_predictor.") for k in keys):
        return "keypointrcnn_resnet50_fpn"
    v2 = "_v2" if "rpn.head.conv.1.0.weight" in keys or "roi_heads.box_head.0.0.weight" in keys else ""
    if any(k.startswith("roi_heads.mask_predictor.") for k in keys):
        return "maskrcnn_resnet50_fpn" + v2
    if any(k.startswith("roi_heads.box_predictor.") for k in keys):
        return "fasterrcnn_resnet50_fpn" + v2
    raise ValueError("detect_arch: no detection head keys (roi_heads.*, head.*); pass --arch.")


def _check_arch(arch):
    if arch not in SUPPORTED:
        raise ValueError(f"unknown torchvision architecture {arch!r}; supported: {', '.join(SUPPORTED)}.")


# -- The config ----------------------------------------------------------------------------------------------

def source_classes(arch):
    """(category_ids, class_names) of the tfdet classes of torchvision `arch` with its COCO labels: class c
    is COCO id c + 1 (Keypoint R-CNN: [1], person), RetinaNet's class c is id c (0 = "__background__")."""
    if arch.startswith("keypoint"):
        ids = [1]
    else:
        ids = list(range(0 if arch.startswith("retinanet") else 1, COCO_CLASSES))
    return ids, [class_space.coco_name(i) for i in ids]


def tfdet_config(arch, num_classes=None, classes=None):
    """The full tfdet config (model, data, train) that reproduces torchvision `arch`: `num_classes` object
    classes (default the source's: 90 COCO classes, Keypoint R-CNN 1), background not counted; or the
    source classes `classes` (tfdet class indices, in their new order). data.category_ids / class_names
    name the classes (left None when `num_classes` differs from the source's: other categories)."""
    _check_arch(arch)
    ids, names = source_classes(arch)
    if classes is not None:
        if num_classes is not None:
            raise ValueError("give num_classes (other categories) or classes (a subset of the source's), not both.")
        ids, names, num_classes = [ids[c] for c in classes], [names[c] for c in classes], len(classes)
    elif num_classes is not None and int(num_classes) != len(ids):
        ids, names = None, None
    config = _tfdet_config(arch, num_classes)
    config.data.category_ids, config.data.class_names = ids, names
    return config


def _tfdet_config(arch, num_classes):
    from tfdet.modeling.dense_heads import RPNSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.detectors.base import MODEL_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.necks import FPN_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.roi_heads.standard import (KEYPOINT_DEFAULTS, MASK_DEFAULTS,  # pylint: disable=import-outside-toplevel
                                                   ROI_DEFAULTS)

    def block(defaults, **overrides):
        out = with_defaults(defaults, **overrides)
        out.pop("type", None)
        return out

    if arch.startswith("retinanet"):  # torchvision's 91 sigmoid channels, class 0 included
        num_classes = COCO_CLASSES if num_classes is None else int(num_classes)
        return ml_collections.ConfigDict(dict(model=_retina_model(num_classes, arch.endswith("_v2")),
                                              **_run_blocks(False, False)))
    num_classes = SOURCE_CLASSES.get(arch, COCO_CLASSES) - 1 if num_classes is None else int(num_classes)
    family = {"mask": "MaskRCNN", "keypoint": "KeypointRCNN"}.get(arch.split("rcnn")[0], "FasterRCNN")
    v2 = arch.endswith("_v2")
    model = dict(
        type=family, num_classes=num_classes,
        backbone=dict(type="ResNet", depth=50, style="pytorch", frozen_stages=1, out_levels=(2, 3, 4, 5),
                      norm="bn" if v2 else {"type": "frozen_bn", "epsilon": 0.0}),
        neck=block(FPN_DEFAULTS, out_channels=256, extra="maxpool", norm="bn" if v2 else None),
        pixel_mean=MODEL_DEFAULTS["pixel_mean"], pixel_std=MODEL_DEFAULTS["pixel_std"], ops_impl=None,
        zero_padding_after_normalize=True,
        rpn=block(RPNSpec.DEFAULTS, anchor_sizes=ANCHOR_SIZES, anchor_round=True, anchor_strides_from_image=True,
                  min_size=1e-3, min_size_inclusive=True, box_coder_clip_below=False,
                  pre_nms_top_k_train=2000, max_proposals_train=2000, pre_nms_top_k_test=1000,
                  max_proposals_test=1000, num_convs=2 if v2 else 1),
        roi=block(ROI_DEFAULTS, sampling_ratio=2, aligned=False, min_box_size=1e-2, box_coder_clip_below=False,
                  bbox_stds=(0.1, 0.1, 0.2, 0.2), num_samples=512, positive_fraction=0.25, score_threshold=0.05,
                  nms_iou=0.5, max_detections=100,
                  box_head=dict(num_convs=4, conv_dim=256, norm="bn", num_fcs=1, fc_dim=1024) if v2 else {}))
    if arch.startswith("mask"):
        model["mask"] = block(MASK_DEFAULTS, sampling_ratio=2, aligned=False, num_convs=4, channels=256,
                              upsample="deconv", paste="torchvision", norm="bn" if v2 else None)
    if arch.startswith("keypoint"):
        model["keypoint"] = block(KEYPOINT_DEFAULTS, sampling_ratio=2, aligned=False, num_keypoints=17, num_convs=8,
                                  channels=512, decode="torchvision")
    return ml_collections.ConfigDict(dict(model=model, **_run_blocks(arch.startswith("mask"),
                                                                     arch.startswith("keypoint"))))


def _retina_model(num_classes, v2=False):
    """RetinaNet: C3-C5, FPN P3-P7 (P6 from P5, v2 from C5; P7 from relu(P6)), torchvision's integer octave
    sizes; v2: BatchNorm backbone, GroupNorm(32) head towers."""
    from tfdet.modeling.dense_heads import RetinaSpec  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.detectors.base import MODEL_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.necks import FPN_DEFAULTS  # pylint: disable=import-outside-toplevel
    from tfdet.modeling.registry import with_defaults  # pylint: disable=import-outside-toplevel

    neck = with_defaults(FPN_DEFAULTS, out_channels=256, min_level=3, max_level=7, extra="conv",
                         extra_source="input" if v2 else "output", relu_before_extra=True)
    retina = with_defaults(RetinaSpec.DEFAULTS, anchor_sizes=RETINA_ANCHOR_SIZES, anchor_round=True,
                           anchor_strides_from_image=True, box_coder_clip_below=False, topk_mode="anchor_class",
                           pre_nms_top_k=1000, score_threshold=0.05, nms_iou=0.5, max_detections=300,
                           norm={"type": "gn", "num_groups": 32} if v2 else None)
    for block in (neck, retina):
        block.pop("type")
    return dict(type="RetinaNet", num_classes=num_classes,
                backbone=dict(type="ResNet", depth=50, style="pytorch", frozen_stages=1, out_levels=(3, 4, 5),
                              norm="bn" if v2 else {"type": "frozen_bn", "epsilon": 0.0}),
                neck=neck, pixel_mean=MODEL_DEFAULTS["pixel_mean"], pixel_std=MODEL_DEFAULTS["pixel_std"],
                ops_impl=None, zero_padding_after_normalize=True, retina=retina)


def _run_blocks(with_masks, with_keypoints):
    """data / train blocks: COCO at torchvision's 800 / 1333 test size, its size rule (floor) and its batch
    padding when served (a multiple of 32 of the batch's largest image; training defaults: tfdet's 1x)."""
    from tfdet.engine.settings import TRAIN_DEFAULTS  # pylint: disable=import-outside-toplevel
    data = dict(source="coco", train_ann="data/coco/annotations/instances_train2017.json",
                train_images="data/coco/train2017", scale=(1333, 800), flip_prob=0.5, max_instances=100,
                mask_size=112 if with_masks else 0, with_keypoints=with_keypoints, with_semantic=False, semantic_stride=8,
                shuffle_buffer=1024, size_rule="torchvision", serving_pad="batch")
    train = {k: v for k, v in TRAIN_DEFAULTS.items() if k != "decay_steps"}
    train.update(batch_size=16, base_lr=0.02)
    return dict(data=data, train=train)


# -- The weights ---------------------------------------------------------------------------------------------

def expected_shapes(arch, num_classes=COCO_CLASSES):
    """{torchvision key: shape} of `arch` with `num_classes` labels (background included), counters out."""
    _check_arch(arch)
    shapes = {}

    def conv(key, out, inp, k, bias=True):
        shapes[f"{key}.weight"] = (out, inp, k, k)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    def bn(key, channels):
        shapes.update({f"{key}.{leaf}": (channels,) for leaf in BN_LEAVES})

    body = "backbone.body"
    conv(f"{body}.conv1", 64, 3, 7, bias=False)
    bn(f"{body}.bn1", 64)
    channels = 64
    for s, blocks in enumerate(STAGES, 1):
        width = 64 * 2 ** (s - 1)
        for b in range(blocks):
            p = f"{body}.layer{s}.{b}"
            conv(f"{p}.conv1", width, channels, 1, bias=False)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3, bias=False)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3", 4 * width, width, 1, bias=False)
            bn(f"{p}.bn3", 4 * width)
            if b == 0:
                conv(f"{p}.downsample.0", 4 * width, channels, 1, bias=False)
                bn(f"{p}.downsample.1", 4 * width)
            channels = 4 * width
    v2 = arch.endswith("_v2")
    if arch.startswith("retinanet"):  # v2: P6 reads C5; tower convs without bias + GroupNorm (index 1)
        for i in range(3):
            conv(f"backbone.fpn.inner_blocks.{i}.0", 256, 512 * 2 ** i, 1)
            conv(f"backbone.fpn.layer_blocks.{i}.0", 256, 256, 3)
        conv("backbone.fpn.extra_blocks.p6", 256, 2048 if v2 else 256, 3)
        conv("backbone.fpn.extra_blocks.p7", 256, 256, 3)
        for part, last, depth in (("classification", "cls_logits", num_classes), ("regression", "bbox_reg", 4)):
            for i in range(4):
                conv(f"head.{part}_head.conv.{i}.0", 256, 256, 3, bias=not v2)
                if v2:
                    shapes.update({f"head.{part}_head.conv.{i}.1.{leaf}": (256,) for leaf in ("weight", "bias")})
            conv(f"head.{part}_head.{last}", RETINA_ANCHORS * depth, 256, 3)
        return shapes
    # v2: conv without bias + BatchNorm (Sequential index 1) where v1 has conv + bias
    for i in range(4):
        for name, inputs, k in (("inner_blocks", 256 * 2 ** i, 1), ("layer_blocks", 256, 3)):
            conv(f"backbone.fpn.{name}.{i}.0", 256, inputs, k, bias=not v2)
            if v2:
                bn(f"backbone.fpn.{name}.{i}.1", 256)
    for i in range(2 if v2 else 1):
        conv(f"rpn.head.conv.{i}.0", 256, 256, 3)
    conv("rpn.head.cls_logits", 3, 256, 1)
    conv("rpn.head.bbox_pred", 12, 256, 1)
    if v2:  # FastRCNNConvFCHead: 4 x (conv, BN) at 0..3, Flatten at 4, Linear at 5
        for i in range(4):
            conv(f"roi_heads.box_head.{i}.0", 256, 256, 3, bias=False)
            bn(f"roi_heads.box_head.{i}.1", 256)
        shapes.update({"roi_heads.box_head.5.weight": (1024, 256 * 7 * 7), "roi_heads.box_head.5.bias": (1024,)})
    else:
        shapes.update({"roi_heads.box_head.fc6.weight": (1024, 256 * 7 * 7), "roi_heads.box_head.fc6.bias": (1024,),
                       "roi_heads.box_head.fc7.weight": (1024, 1024), "roi_heads.box_head.fc7.bias": (1024,)})
    shapes.update({"roi_heads.box_predictor.cls_score.weight": (num_classes, 1024),
                   "roi_heads.box_predictor.cls_score.bias": (num_classes,),
                   "roi_heads.box_predictor.bbox_pred.weight": (4 * num_classes, 1024),
                   "roi_heads.box_predictor.bbox_pred.bias": (4 * num_classes,)})
    if arch.startswith("mask"):
        for i in range(4):
            conv(f"roi_heads.mask_head.{i}.0", 256, 256, 3, bias=not v2)
            if v2:
                bn(f"roi_heads.mask_head.{i}.1", 256)
        conv("roi_heads.mask_predictor.conv5_mask", 256, 256, 2)  # ConvTranspose [in, out, kh, kw]
        conv("roi_heads.mask_predictor.mask_fcn_logits", num_classes, 256, 1)
    if arch.startswith("keypoint"):
        for j in range(8):
            conv(f"roi_heads.keypoint_head.{2 * j}", 512, 256 if j == 0 else 512, 3)
        shapes["roi_heads.keypoint_predictor.kps_score_lowres.weight"] = (512, 17, 4, 4)  # ConvTranspose [in, out]
        shapes["roi_heads.keypoint_predictor.kps_score_lowres.bias"] = (17,)
    return shapes


def source_labels(sd, arch):
    """The number of labels (background included) of a canonical state dict (its classifier's rows)."""
    if arch.startswith("retinanet"):
        cls = sd.get("head.classification_head.cls_logits.bias")
        return int(cls.shape[0]) // RETINA_ANCHORS if cls is not None and cls.ndim == 1 else COCO_CLASSES
    cls = sd.get("roi_heads.box_predictor.cls_score.weight")
    return (int(cls.shape[0]) if cls is not None and cls.ndim == 2 and cls.shape[0] >= 2
            else SOURCE_CLASSES.get(arch, COCO_CLASSES))


def check_state_dict(state_dict, arch):
    """The canonical state dict (current names, float32 arrays) of `arch`; one ValueError listing every
    missing, unexpected and mis-shaped key otherwise."""
    sd = canonical(state_dict)
    labels = source_labels(sd, arch)
    want = expected_shapes(arch, labels)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    misshaped = sorted(f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in set(want) & set(sd)
                       if tuple(sd[k].shape) != tuple(want[k]))
    problems = [f"{what} ({len(keys)}): " + ", ".join(keys) for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise ValueError(f"the state dict is not a torchvision {arch} checkpoint ({'; '.join(problems)}); "
                         f"is it another architecture (--arch)?")
    return sd


def _kernel(w):
    """torch conv [O, I, kh, kw] (ConvTranspose [I, O, kh, kw]) -> TF [kh, kw, I, O] ([kh, kw, O, I])."""
    return w.transpose(2, 3, 1, 0)


def _background_last(x):
    """Rows [1..K-1, 0] (torchvision background 0 -> tfdet background last)."""
    return np.concatenate([x[1:], x[:1]], axis=0)


# The class-specific layers (tfdet.zoo.classes' kinds: how their output channels index the classes).
CLASS_LAYERS = ("bbox_head/cls/", "bbox_head/reg/", "mask_head/logits/", "retina_head/retina_cls/")
CLASS_LAYER_KINDS = class_space.layer_kinds(CLASS_LAYERS)


def convert(state_dict, arch, num_classes=None, classes=None):
    """{tfdet weight path (tfdet.engine.checkpoint.weights_by_path): array} of a torchvision state dict
    of `arch` (tfdet_config(arch, num_classes, classes) builds the model they fit). With `num_classes` other
    than the source's, the class-specific layers (CLASS_LAYERS) are left out: the model keeps their initial
    values (fine-tuning on other categories). With `classes` (source tfdet class indices), the class layers
    keep those classes' channels, in that order (tfdet.zoo.classes.select_classes)."""
    if classes is not None and num_classes is not None:
        raise ValueError("give num_classes (other categories) or classes (a subset of the source's), not both.")
    sd = check_state_dict(state_dict, arch)
    source_classes = source_labels(sd, arch) - (0 if arch.startswith("retinanet") else 1)
    reinit = num_classes is not None and int(num_classes) != source_classes
    out = {}
    for key, value in sd.items():
        parts, leaf = key.split("."), key.rsplit(".", 1)[-1]
        if key.startswith("backbone.body."):  # convs have no bias: 1-d values are BN's
            layer = re.sub(r"^layer(\d)\.(\d+)\.", r"layer\1_\2_", ".".join(parts[2:-1])).replace(".", "_")
            name, norm = layer, value.ndim == 1
        elif key.startswith("backbone.fpn.extra_blocks."):  # RetinaNet p6, p7
            name, norm = f"fpn/extra{parts[3][1:]}", False
        elif key.startswith("backbone.fpn."):
            kind = "lateral" if parts[2] == "inner_blocks" else "output"
            norm = parts[4] == "1"
            first = 3 if arch.startswith("retinanet") else 2
            name = f"fpn/{kind}{int(parts[3]) + first}" + ("_norm" if norm else "")
        elif key.startswith("head."):  # RetinaNet (all 91 channels kept: module docstring)
            tower = "cls" if parts[1] == "classification_head" else "reg"
            norm = parts[2] == "conv" and parts[4] == "1"  # v2's GroupNorm: weight, bias -> gamma, beta
            name = (f"retina_head/{tower}_conv{parts[3]}" + ("_norm" if norm else "") if parts[2] == "conv" else
                    "retina_head/" + {"cls_logits": "retina_cls", "bbox_reg": "retina_reg"}[parts[2]])
        elif key.startswith("rpn.head."):
            index = int(parts[3]) if parts[2] == "conv" else 0
            name, norm = "rpn_head/" + {"conv": f"rpn_conv{index + 1 if index else ''}", "cls_logits": "rpn_cls",
                                        "bbox_pred": "rpn_reg"}[parts[2]], False
        elif key.startswith("roi_heads.box_head."):
            fc = {"fc6": "fc1", "fc7": "fc2", "5": "fc1"}.get(parts[2])
            norm = fc is None and parts[3] == "1"
            name = f"bbox_head/{fc}" if fc else f"bbox_head/conv{int(parts[2]) + 1}" + ("_norm" if norm else "")
            if fc == "fc1" and leaf == "weight":  # input rows (C, H, W) -> (H, W, C), tfdet's flatten order
                value = value.reshape(-1, 256, 7, 7).transpose(2, 3, 1, 0).reshape(256 * 7 * 7, -1).T
        elif key.startswith("roi_heads.box_predictor."):
            name, norm = "bbox_head/" + {"cls_score": "cls", "bbox_pred": "reg"}[parts[2]], False
            value = _background_last(value) if parts[2] == "cls_score" else value[4:]  # background's deltas out
        elif key.startswith("roi_heads.mask_head."):
            norm = parts[3] == "1"
            name = f"mask_head/conv{int(parts[2]) + 1}" + ("_norm" if norm else "")
        elif key.startswith("roi_heads.mask_predictor."):
            name, norm = "mask_head/" + {"conv5_mask": "upsample", "mask_fcn_logits": "logits"}[parts[2]], False
            value = value[1:] if parts[2] == "mask_fcn_logits" else value  # the background's channel out
        elif key.startswith("roi_heads.keypoint_head."):
            name, norm = f"keypoint_head/conv{int(parts[2]) // 2 + 1}", False
        elif key.startswith("roi_heads.keypoint_predictor."):
            name, norm = "keypoint_head/deconv", False
        else:  # check_state_dict lets no other key through
            raise AssertionError(key)
        out[f"{name}/{BN_LEAVES[leaf] if norm else 'kernel' if leaf == 'weight' else 'bias'}"] = (
            value if norm or leaf != "weight" else _kernel(value) if value.ndim == 4 else value.T)
    out = {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()
           if not (reinit and k.startswith(CLASS_LAYERS))}
    if classes is not None:
        layers = [(prefix, kind) for prefix, kind in CLASS_LAYER_KINDS if any(k.startswith(prefix) for k in out)]
        out = class_space.select_classes(out, layers, classes, source_classes)
    return out

