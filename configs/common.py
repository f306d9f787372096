"""Shared config blocks, built by functions (no copy-pasted dicts). Config files call these.

Variants are chosen by the `get_config(arg)` string: comma-separated `key=value` pairs and bare flags,
e.g. `configs/mask_rcnn.py:backbone=r101,dcn,carafe` or `configs/faster_rcnn.py:tiny`.
  backbone  r50 | r101 | x101 | fishnet99 | fishnet150   (tiny: TinyConvNet, small images, for CPU/tests)
  dcn       deformable convs in ResNet stages c3-c5 (mmdetection *_dconv_c3-c5)
  carafe    CARAFE upsampling in the FPN (and in the mask head)
Defaults are mmdetection's R-50-FPN 1x COCO settings: 800x1333 inputs, SGD lr 0.02 for batch 16,
momentum 0.9, weight decay 1e-4, linear warmup over 500 iterations from 0.001x, lr x0.1 after
epochs 8 and 11 of 12.
"""

import ml_collections

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


def fpn(v, min_level=2, max_level=6, extra="maxpool"):
    return dict(out_channels=32 if v.tiny else 256, min_level=min_level, max_level=max_level, extra=extra,
                extra_source="input", upsample="carafe" if v.carafe else "nearest")


def rpn(v):
    test_top_k = 200 if v.tiny else 1000
    return dict(levels=(2, 3, 4, 5, 6), anchor_scales=(8.0,), anchor_ratios=(0.5, 1.0, 2.0),
                feat_channels=32 if v.tiny else 256, num_samples=256, positive_fraction=0.5, nms_iou=0.7,
                pre_nms_top_k_train=400 if v.tiny else 2000, max_proposals_train=200 if v.tiny else 1000,
                pre_nms_top_k_test=test_top_k, max_proposals_test=test_top_k)


def roi(v):
    return dict(levels=(2, 3, 4, 5), pooled_size=7, sampling_ratio=0, pos_iou=0.5, neg_iou=0.5,
                num_samples=64 if v.tiny else 512, positive_fraction=0.25, fc_dim=64 if v.tiny else 1024,
                class_agnostic=False, bbox_stds=(0.1, 0.1, 0.2, 0.2), loss_box="l1", smooth_l1_beta=1.0,
                score_threshold=0.05, nms_iou=0.5, max_detections=20 if v.tiny else 100, nms_method="hard",
                soft_nms_sigma=0.5)


def mask(v):
    return dict(pooled_size=14, num_convs=2 if v.tiny else 4, channels=16 if v.tiny else 256,
                upsample="carafe" if v.carafe else "deconv", class_agnostic=False, threshold=0.5,
                gt_masks="box")  # tfdet.data.pipeline's box-cropped masks; "image" for full-image bitmaps


def keypoint(v):
    return dict(pooled_size=14, num_keypoints=17, num_convs=2 if v.tiny else 8, channels=16 if v.tiny else 512,
                loss_weight=1.0)


CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
CASCADE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)


def cascade(v):
    """The cascade stages (mmdetection cascade_rcnn_r50_fpn_1x), one entry per stage."""
    return dict(stages=[dict(pos_iou=iou, bbox_stds=stds, loss_weight=weight)
                        for iou, stds, weight in zip(CASCADE_IOUS, CASCADE_STDS, CASCADE_LOSS_WEIGHTS)])


def cascade_roi(v):
    """roi block of the cascades: class-agnostic regression (the stage settings live in `cascade`)."""
    return {**roi(v), "class_agnostic": True}


def htc(v):
    """HTC extras (mmdetection htc_r50_fpn_1x): the semantic branch on COCO-stuff's 183 classes."""
    return dict(semantic=bool(v.semantic), semantic_classes=4 if v.tiny else 183, fusion_level=3,
                semantic_convs=2 if v.tiny else 4, semantic_loss_weight=0.2, mask_info_flow=True, interleaved=True)


def retina(v):
    return dict(levels=(3, 4, 5, 6, 7), octave_base_scale=4, scales_per_octave=3, anchor_ratios=(0.5, 1.0, 2.0),
                feat_channels=32 if v.tiny else 256, num_convs=2 if v.tiny else 4, prior_prob=0.01, pos_iou=0.5,
                neg_iou=0.4, min_pos_iou=0.0, focal_alpha=0.25, focal_gamma=2.0, pre_nms_top_k=1000,
                score_threshold=0.05, nms_iou=0.5, max_detections=20 if v.tiny else 100)


def model(v, type_name, num_classes=80, backbone_levels=(2, 3, 4, 5), neck=None, **blocks):
    return dict(type=type_name, num_classes=3 if v.tiny else num_classes, backbone=backbone(v, backbone_levels),
                neck=fpn(v, **(neck or {})), pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375),
                ops_impl=None, **blocks)


COCO_ROOT = "data/coco"  # where the full-size configs expect COCO 2017 (override --config.data.train_ann=...)


def data(v, with_masks=False, with_keypoints=False):
    """The training input (tfdet.engine.data.TrainInput: source + tfdet.data.pipeline.InputOptions fields).

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
    """1x schedule: 12 epochs, step decay at epochs 8 and 11, linear warmup (lr scaled to the batch).
    tiny: 24 epochs of the shapes data at batch 4 (64 steps each; about 2 minutes on 2 CPU cores).
    Every field of tfdet.engine.train's `train` block is present (but decay_steps, which replaces
    decay_epochs when set), so any of them can be overridden from the command line."""
    block = dict(batch_size=16, optimizer="sgd", base_lr=base_lr, momentum=0.9, weight_decay=1e-4, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, epochs=12, total_steps=0, steps_per_epoch=0, warmup_steps=500,
                 warmup_ratio=0.001, decay_epochs=(8, 11), decay_factor=0.1, clip_norm=0.0, checkpoint_every=500,
                 keep_checkpoints=3, log_every=50, seed=0)
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
