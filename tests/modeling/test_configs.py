"""Config files: every variant loads with the published hyper-parameters; absl config_flags loading;
bad variants fail clearly; (slow) every backbone block builds."""

import importlib
import itertools
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from tfdet.modeling.backbones import build_backbone

FAMILIES = {"faster_rcnn": "FasterRCNN", "mask_rcnn": "MaskRCNN", "keypoint_rcnn": "KeypointRCNN",
            "retinanet": "RetinaNet"}


def load(family, arg):
    return importlib.import_module(f"configs.{family}").get_config(arg)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backbone,dcn,carafe", [(b, d, c) for b, d, c in itertools.product(
    common.BACKBONES, (False, True), (False, True)) if not (d and b.startswith("fishnet"))])
def test_every_variant_loads(family, backbone, dcn, carafe):
    arg = ",".join([f"backbone={backbone}"] + (["dcn"] if dcn else []) + (["carafe"] if carafe else []))
    cfg = load(family, arg)
    m, t = cfg.model, cfg.train
    assert m.type == FAMILIES[family]
    assert (t.batch_size, t.momentum, t.weight_decay, t.warmup_steps, t.epochs, tuple(t.decay_epochs)) == \
        (16, 0.9, 1e-4, 500, 12, (8, 11))
    assert t.base_lr == (0.01 if family == "retinanet" else 0.02)
    assert tuple(cfg.data.scale) == (1333, 800)
    expected_type = {"r50": "ResNet", "r101": "ResNet", "x101": "ResNeXt"}.get(backbone, "FishNet")
    assert m.backbone.type == expected_type
    if backbone in ("r50", "r101", "x101"):
        assert m.backbone.depth == int(backbone[1:]) and m.backbone.norm == "frozen_bn"
        assert tuple(m.backbone.get("stage_with_dcn", (False,) * 4)) == ((False, True, True, True) if dcn else (False,) * 4)
    if backbone == "x101":
        assert (m.backbone.groups, m.backbone.base_width) == (32, 4)
    assert m.neck.upsample == ("carafe" if carafe else "nearest") and m.neck.out_channels == 256
    if family == "retinanet":
        r = m.retina
        assert (m.neck.min_level, m.neck.max_level, m.neck.extra) == (3, 7, "conv")
        assert tuple(m.backbone.out_levels) == (3, 4, 5)
        assert (r.octave_base_scale, r.scales_per_octave, r.focal_alpha, r.focal_gamma, r.prior_prob) == \
            (4, 3, 0.25, 2.0, 0.01)
        assert (r.pre_nms_top_k, r.nms_iou, r.max_detections, r.score_threshold) == (1000, 0.5, 100, 0.05)
    else:
        assert tuple(m.rpn.levels) == (2, 3, 4, 5, 6) and tuple(m.roi.levels) == (2, 3, 4, 5)
        assert (m.rpn.num_samples, m.rpn.positive_fraction, m.rpn.nms_iou, m.rpn.pre_nms_top_k_train,
                m.rpn.max_proposals_test) == (256, 0.5, 0.7, 2000, 1000)
        assert (m.roi.num_samples, m.roi.positive_fraction, m.roi.box_head.fc_dim, m.roi.pos_iou) == (512, 0.25, 1024, 0.5)
        assert tuple(m.roi.bbox_stds) == (0.1, 0.1, 0.2, 0.2)
        assert (m.roi.score_threshold, m.roi.nms_iou, m.roi.max_detections) == (0.05, 0.5, 100)
    if family == "mask_rcnn":
        assert (m.mask.pooled_size, m.mask.num_convs, m.mask.channels) == (14, 4, 256)
        assert m.mask.upsample == ("carafe" if carafe else "deconv") and cfg.data.mask_size == 112
    if family == "keypoint_rcnn":
        assert (m.keypoint.num_keypoints, m.keypoint.num_convs, m.keypoint.channels) == (17, 8, 512)
        assert m.num_classes == 1 and cfg.data.with_keypoints


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_variant_is_small(family):
    cfg = load(family, "tiny")
    assert cfg.model.backbone.type == "TinyConvNet" and cfg.data.source == "shapes" and tuple(cfg.data.scale) == (160, 128)
    assert cfg.model.neck.out_channels <= 32 and cfg.train.batch_size == 4


def test_bad_variants_fail_clearly():
    with pytest.raises(ValueError, match="backbone must be one of"):
        load("faster_rcnn", "backbone=r18")
    with pytest.raises(ValueError, match="unknown option 'fpn'"):
        load("faster_rcnn", "fpn=carafe")
    with pytest.raises(ValueError, match="dcn is only available"):
        load("mask_rcnn", "backbone=fishnet99,dcn")


def test_config_flags_loading(monkeypatch):
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values)
    argv = ["prog", "--config=configs/mask_rcnn.py:backbone=r101,dcn", "--config.train.batch_size=8",
            "--config.model.roi.nms_method=linear"]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
    values(argv)
    cfg = values.config
    assert cfg.model.backbone.depth == 101 and cfg.train.batch_size == 8 and cfg.model.roi.nms_method == "linear"
    assert cfg.variant.dcn is True


ALL_CONFIGS = ("faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet", "cascade_rcnn", "cascade_mask_rcnn", "htc",
               "ga_rpn", "ga_faster_rcnn", "ga_retinanet")


@pytest.mark.parametrize("family", ALL_CONFIGS)
@pytest.mark.parametrize("arg", ["", "tiny"])
def test_train_and_data_blocks_are_the_engines(family, arg):
    """bin/train.py refuses unknown fields and only lets existing ones be overridden: every config's
    `train` block holds every engine field (so each is overridable) and its `data` block only input fields."""
    from tfdet.data import train_input as engine_data
    from tfdet.engine import settings

    cfg = load(family, arg)
    assert set(cfg.train) == set(settings.TRAIN_DEFAULTS) - {"decay_steps"}
    assert set(cfg.data) <= set(engine_data.DATA_DEFAULTS) | engine_data._OPTION_FIELDS
    settings.train_block(cfg.train)  # raises on an unknown field
    assert cfg.data.source == ("shapes" if arg else "coco")
    assert (cfg.data.mask_size > 0) == (family in ("mask_rcnn", "cascade_mask_rcnn", "htc"))
    assert cfg.data.with_keypoints == (family == "keypoint_rcnn")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", common.BACKBONES)
def test_every_backbone_block_builds(backbone):
    block = load("faster_rcnn", f"backbone={backbone}").model.backbone
    model = build_backbone(block)
    assert sorted(int(k) for k in model.output.keys()) == [2, 3, 4, 5]
