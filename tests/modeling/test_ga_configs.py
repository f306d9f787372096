"""Guided Anchoring configs: published hyper-parameters, every backbone variant, blocks build the heads."""

import importlib

import pytest

from configs import common
from tfdet.modeling.dense_heads.ga_head import GAAnchors, GARPNHead
from tfdet.modeling.dense_heads.ga_retina_head import GARetinaHead


def load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("backbone", common.BACKBONES)
@pytest.mark.parametrize("name,model_type", [("ga_rpn", "RPN"), ("ga_faster_rcnn", "FasterRCNN"),
                                             ("ga_retinanet", "RetinaNet")])
def test_variants_load(name, model_type, backbone):
    cfg = load(name, f"backbone={backbone}")
    assert cfg.model.type == model_type and cfg.variant.backbone == backbone


def test_ga_rpn_and_faster_hyper_parameters():
    rpn = load("ga_rpn").model.rpn
    assert (rpn.octave_base_scale, rpn.scales_per_octave, tuple(rpn.anchor_ratios)) == (8, 3, (0.5, 1.0, 2.0))
    assert tuple(rpn.anchor_stds) == (0.07, 0.07, 0.14, 0.14) and tuple(rpn.box_stds) == (0.07, 0.07, 0.11, 0.11)
    assert (rpn.loc_threshold, rpn.center_ratio, rpn.ignore_ratio, rpn.loc_negative_weight) == (0.01, 0.2, 0.5, 0.1)
    assert (rpn.shape_beta, rpn.shape_pos_iou, rpn.shape_neg_iou, rpn.deformable_groups) == (0.2, 0.7, 0.3, 4)
    assert rpn.max_proposals_test == 1000
    faster = load("ga_faster_rcnn")
    assert faster.model.rpn.max_proposals_test == 300 and faster.model.rpn.max_proposals_train == 300
    assert (faster.model.roi.pos_iou, faster.model.roi.num_samples) == (0.6, 256)
    assert tuple(faster.model.roi.bbox_stds) == (0.05, 0.05, 0.1, 0.1) and faster.train.clip_norm == 35.0


def test_ga_retinanet_hyper_parameters_and_blocks_build_heads():
    retina = load("ga_retinanet").model.retina
    assert (retina.octave_base_scale, retina.shape_pos_iou, retina.shape_neg_iou, retina.shape_min_pos_iou) == \
        (4, 0.5, 0.4, 0.4)
    assert (retina.neg_iou, retina.min_pos_iou, retina.smooth_l1_beta) == (0.5, 0.0, 0.04)
    tiny = load("ga_retinanet", "tiny").model
    GARetinaHead(tiny.num_classes, tiny.retina.feat_channels, tiny.retina.num_convs, tiny.retina.deformable_groups)
    anchors = GAAnchors([2 ** lvl for lvl in tiny.retina.levels], tiny.retina.octave_base_scale)
    assert anchors.approx.num_anchors == 9 and anchors.strides[0] == 8
    rpn = load("ga_rpn", "tiny").model.rpn
    GARPNHead(rpn.feat_channels, rpn.deformable_groups)
