"""Shared config blocks, built by functions (no copy-pasted dicts). Config files call these.

Variants are chosen by the `get_config(arg)` string: comma-separated `key=value` pairs and bare flags,
e.g. `configs/mask_rcnn.py:backbone=r101,dcn,carafe` or `configs/faster_rcnn.py:tiny`.
  backbone  r50 | r101 | x101 | fishnet99 | fishnet150   (tiny: TinyConvNet, small images, for CPU/tests)
  dcn       deformable convs in ResNet stages c3-c5 (mmdetection *_dconv_c3-c5)
  carafe    CARAFE upsampling in the FPN (and in the mask head)
Defaults are mmdetection's R-50-FPN 1x COCO settings: 800x1333 inputs, SGD lr 0.02 for batch 16,
momentum 0.9, weight decay 1e-4, linear warmup over 500 iterations from 0.001x, lr x0.1 after
epochs 8 and 11 of 12. Each part's defaults live with the part (its DEFAULTS or its constructor's
signature); the blocks here take them and state only what a variant changes.
"""

import ml_collections

from tfdet.engine.settings import TRAIN_DEFAULTS
from tfdet.modeling.dense_heads import RetinaSpec, RPNSpec
from tfdet.modeling.detectors.base import MODEL_DEFAULTS
from tfdet.modeling.necks import FPN_DEFAULTS
from tfdet.modeling.registry import with_defaults
from tfdet.modeling.roi_heads.cascade import CASCADE_DEFAULTS, HTC_DEFAULTS, CascadeRoIHead
from tfdet.modeling.roi_heads.standard import KEYPOINT_DEFAULTS, MASK_DEFAULTS, ROI_DEFAULTS

BACKBONES = ("r50", "r101", "x101", "fishnet99", "fishnet150")
_FLAGS = ("dcn", "carafe", "tiny")


def parse_arg(arg, **defaults):
    """Parses 'backbone=r101,dcn' into a ConfigDict over `defaults` (flags become True)."""
    result = ml_collections.ConfigDict(dict(defaults))
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, eq, value = token.partition("=")
        if key not in defaults:
            raise ValueError(f"config arg: unknown option {key!r} in {arg!r}; known: {sorted(defaults)}.")
        if not eq:
            value = True
        elif isinstance(defaults[key], bool):
            value = value.lower() in ("1", "true", "yes")
        result[key] = value
    if result.get("backbone") not in BACKBONES:
        raise ValueError(f"config arg: backbone must be one of {BACKBONES}, got {result.get('backbone')!r}.")
    return result


def variant(arg, **extra_options):
    return parse_arg(arg, backbone="r50", dcn=False, carafe=False, tiny=False, **extra_options)


def backbone(v, out_levels=(2, 3, 4, 5)):
    """Backbone block for variant v (frozen BN, stem and stage 1 frozen, as mmdetection)."""
    if v.tiny:
        return dict(type="TinyConvNet", channels=(16, 32, 64, 64), out_levels=out_levels)
    if v.backbone.startswith("fishnet"):
        if v.dcn:
            raise ValueError("config: dcn is only available with ResNet/ResNeXt backbones.")
        return dict(type="FishNet", depth=int(v.backbone[len("fishnet"):]), norm="frozen_bn", frozen_stages=1,
                    out_levels=out_levels)
    block = dict(type="ResNet", depth=int(v.backbone[1:]), norm="frozen_bn", frozen_stages=1, style="pytorch",
                 out_levels=out_levels)
    if v.backbone == "x101":
        block.update(type="ResNeXt", depth=101, groups=32, base_width=4)
    if v.dcn:
        block.update(stage_with_dcn=(False, True, True, True), dcn=dict(modulated=False, deformable_groups=1))
    return block


def spec_block(defaults, **overrides):
    """A block of a part's defaults (kept where the part is defined) with this config's overrides; the
    part's `type` is left out: an absent type is the default part."""
    block = with_defaults(defaults, **overrides)
    block.pop("type", None)
    return block


def fpn(v, **options):
    return spec_block(FPN_DEFAULTS, out_channels=32 if v.tiny else 256, upsample="carafe" if v.carafe else "nearest",
                      **options)


def rpn(v):
    if not v.tiny:
        return spec_block(RPNSpec.DEFAULTS)
    return spec_block(RPNSpec.DEFAULTS, feat_channels=32, pre_nms_top_k_train=400, max_proposals_train=200,
                      pre_nms_top_k_test=200, max_proposals_test=200)


def roi(v, defaults=ROI_DEFAULTS):
    if not v.tiny:
        return spec_block(defaults)
    return spec_block(defaults, num_samples=64, box_head=dict(fc_dim=64), max_detections=20)


def mask(v):
    return spec_block(MASK_DEFAULTS, num_convs=2 if v.tiny else 4, channels=16 if v.tiny else 256,
                      upsample="carafe" if v.carafe else "deconv")


def keypoint(v):
    return spec_block(KEYPOINT_DEFAULTS, num_convs=2 if v.tiny else 8, channels=16 if v.tiny else 512)


def cascade(v):
    """The cascade stages (mmdetection cascade_rcnn_r50_fpn_1x), one entry per stage."""
    return spec_block(CASCADE_DEFAULTS)


def cascade_roi(v):
    """roi block of the cascades: class-agnostic regression (the stage settings live in `cascade`)."""
    return roi(v, CascadeRoIHead.DEFAULTS)


def htc(v):
    """HTC extras (mmdetection htc_r50_fpn_1x): the semantic branch on COCO-stuff's 183 classes."""
    return spec_block(HTC_DEFAULTS, semantic=bool(v.semantic), semantic_classes=4 if v.tiny else 183,
                      semantic_convs=2 if v.tiny else 4)


def retina(v):
    if not v.tiny:
        return spec_block(RetinaSpec.DEFAULTS)
    return spec_block(RetinaSpec.DEFAULTS, feat_channels=32, num_convs=2, max_detections=20)


def model(v, type_name, num_classes=80, backbone_levels=(2, 3, 4, 5), neck=None, **blocks):
    return dict(type=type_name, num_classes=3 if v.tiny else num_classes, backbone=backbone(v, backbone_levels),
                neck=fpn(v, **(neck or {})), pixel_mean=MODEL_DEFAULTS["pixel_mean"],
                pixel_std=MODEL_DEFAULTS["pixel_std"], ops_impl=None, **blocks)


COCO_ROOT = "data/coco"  # where the full-size configs expect COCO 2017 (override --config.data.train_ann=...)


def data(v, with_masks=False, with_keypoints=False):
    """The training input (tfdet.data.train_input.TrainInput: source + tfdet.data.pipeline.InputOptions fields).

    Full size: COCO 2017 train from COCO_ROOT, keep-ratio resize to (1333, 800). tiny: the embedded
    shapes dataset (generated on first use) at its native size, 160 x 128 at most."""
    block = dict(source="coco", train_ann=f"{COCO_ROOT}/annotations/instances_train2017.json",
                 train_images=f"{COCO_ROOT}/train2017", scale=(1333, 800), flip_prob=0.5, max_instances=100,
                 mask_size=112 if with_masks else 0, with_keypoints=bool(with_keypoints), with_semantic=False,
                 semantic_stride=8, shuffle_buffer=1024)
    if v.tiny:
        block.update(source="shapes", train_ann="", train_images="", scale=(160, 128), max_instances=8,
                     shuffle_buffer=256)
    return block


def schedule(v, base_lr=0.02):
    """1x schedule (the engine's defaults, tfdet.engine.settings): 12 epochs, step decay at epochs 8 and 11,
    linear warmup, at batch 16. tiny: 24 epochs of the shapes data at batch 4 (64 steps each; about 2
    minutes on 2 CPU cores). Every field of the `train` block is present (but decay_steps, which replaces
    decay_epochs when set), so any of them can be overridden from the command line."""
    block = {k: v for k, v in TRAIN_DEFAULTS.items() if k != "decay_steps"}
    block.update(batch_size=16, base_lr=base_lr)
    if v.tiny:
        block.update(batch_size=4, epochs=24, warmup_steps=100, decay_epochs=(17, 22))
    return block


def make_config(arg, type_name, model_blocks, base_lr=0.02, with_masks=False, with_keypoints=False, num_classes=80,
                extra_options=None, **model_options):
    """The full ConfigDict {model, data, train, variant} for one detector family; `model_blocks` maps
    block names to the functions above (e.g. {"rpn": rpn, "roi": roi}); `extra_options` adds
    family-specific variant options with their defaults (e.g. {"semantic": True})."""
    v = variant(arg, **(extra_options or {}))
    model_blocks = {name: fn(v) for name, fn in model_blocks.items()}
    return ml_collections.ConfigDict(dict(
        model=model(v, type_name, num_classes=num_classes, **model_options, **model_blocks),
        data=data(v, with_masks, with_keypoints),
        train=schedule(v, base_lr),
        variant=v.to_dict()))
