"""mmdetection 1.x checkpoints (tfdet/zoo/mmdet/legacy_v1.py) against the configs/legacy_1.x fixtures, which
mmdetection 3.3 made by running its legacy_1.x configs (LegacyAnchorGenerator, LegacyDeltaXYWHBBoxCoder,
RoIAlign aligned=False sampling_ratio=2) on a 2.x-layout state dict.

The 1.x file is that state dict with upgrade_model_version.py's moves undone (box / mask heads at the top
level, the background class first in fc_cls, 4 background rows first in fc_reg, a background mask channel
first in conv_logits, RetinaNet's pre-0.5.3 `cls_convs.N.weight`) and a 1.x config text (1.x field names:
anchor_scales, target_stds, out_size / sample_num, num_classes counting the background, a top-level
test_cfg with nms_thr / max_num / iou_thr). It must convert to exactly the spec (but for its "mmdet_v1")
and the weights of the 2.x-layout file with the legacy_1.x config (mmdetection's zoo serves those), and
that model must reproduce the fixture's stages, proposals and detections (tests/zoo/test_mmdet_convert_models.py).
"""

import functools

import numpy as np
import pytest

from tests.zoo import mmdet_fixture
from tests.zoo.test_mmdet_convert_models import _text, assert_model_stages, checkpoint, config_text, conversion, converted
from tfdet.zoo import mmdet
from tfdet.zoo.mmdet import common, labels, legacy_v1

FIXTURES = ["faster_rcnn_r50_fpn_1x_coco_v1", pytest.param("retinanet_r50_fpn_1x_coco_v1", marks=pytest.mark.slow)]


def v1_model_text(meta):
    """The fixture's model as a 1.x config text writes it (`model = ...` and the top-level `test_cfg = ...`)."""
    backbone, neck, test = dict(meta["backbone"], init_cfg=None), dict(meta["neck"]), meta["test_cfg"]
    if meta["kind"] == "retina":
        neck["add_extra_convs"] = True  # 1.x: extra convs on the inputs (extra_convs_on_inputs=True)
        model = dict(type="RetinaNet", pretrained="torchvision://resnet50", backbone=backbone, neck=neck,
                     bbox_head=dict(type="RetinaHead", num_classes=81, in_channels=256, stacked_convs=4,
                                    feat_channels=256, octave_base_scale=4, scales_per_octave=3,
                                    anchor_ratios=[0.5, 1.0, 2.0], anchor_strides=[8, 16, 32, 64, 128],
                                    target_means=[0.0] * 4, target_stds=[1.0] * 4,
                                    loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25)))
        v1_test = dict(nms_pre=test["nms_pre"], min_bbox_size=test["min_bbox_size"], score_thr=test["score_thr"],
                       nms=dict(type="nms", iou_thr=test["nms"]["iou_threshold"]), max_per_img=test["max_per_img"])
    else:
        roi_layer = dict(type="RoIAlign", out_size=7, sample_num=2)
        model = dict(type="FasterRCNN", pretrained="torchvision://resnet50", backbone=backbone, neck=neck,
                     rpn_head=dict(type="RPNHead", in_channels=256, feat_channels=256, anchor_scales=[8],
                                   anchor_ratios=[0.5, 1.0, 2.0], anchor_strides=[4, 8, 16, 32, 64],
                                   target_means=[0.0] * 4, target_stds=[1.0] * 4,
                                   loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
                     bbox_roi_extractor=dict(type="SingleRoIExtractor", roi_layer=roi_layer, out_channels=256,
                                             featmap_strides=[4, 8, 16, 32]),
                     bbox_head=dict(type="SharedFCBBoxHead", num_fcs=2, in_channels=256, fc_out_channels=1024,
                                    roi_feat_size=7, num_classes=81, target_means=[0.0] * 4,
                                    target_stds=[0.1, 0.1, 0.2, 0.2], reg_class_agnostic=False))
        rpn, rcnn = test["rpn"], test["rcnn"]
        v1_test = dict(rpn=dict(nms_across_levels=False, nms_pre=rpn["nms_pre"], nms_post=rpn["nms_pre"],
                                max_num=rpn["max_per_img"], nms_thr=rpn["nms"]["iou_threshold"],
                                min_bbox_size=rpn["min_bbox_size"]),
                       rcnn=dict(score_thr=rcnn["score_thr"], nms=dict(type="nms", iou_thr=rcnn["nms"]["iou_threshold"]),
                                 max_per_img=rcnn["max_per_img"]))
    return f"model = {_text(model)}\ntrain_cfg = dict(rpn=dict(smoothl1_beta=1.0 / 9.0))\ntest_cfg = {_text(v1_test)}\n"


def v1_config_text(meta):
    """A 1.x config text: the model, test_cfg, img_norm_cfg and test pipeline (taken from the 2.x one's)."""
    lines = [line for line in config_text(meta, "mmdet2").splitlines() if not line.startswith("model = ")]
    return v1_model_text(meta) + "\n".join(lines) + "\n"


def downgrade(state_dict, kind, seed=0):
    """A 2.x state dict in the 1.x layout: upgrade_model_version.py's moves undone (module docstring); the
    background's rows are random (the converter drops them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in state_dict.items():
        if key.startswith("roi_head."):
            key = key[len("roi_head."):]
        if kind == "retina" and ".conv." in key and key.startswith(("bbox_head.cls_convs.", "bbox_head.reg_convs.")):
            key = key.replace(".conv.", ".")
        if key.startswith("bbox_head.fc_cls."):
            value = np.concatenate([value[-1:], value[:-1]])
        elif key.startswith("bbox_head.fc_reg."):
            value = np.concatenate([rng.normal(size=(4,) + value.shape[1:]).astype(value.dtype), value])
        elif key.startswith("mask_head.conv_logits."):
            value = np.concatenate([rng.normal(size=(1,) + value.shape[1:]).astype(value.dtype), value])
        out[key] = value
    return out


@functools.lru_cache(maxsize=None)
def v1_checkpoint(name):
    """(state dict, meta) of fixture `name` as an mmdetection 1.x file (RetinaNet: a pre-0.5.3 one)."""
    meta, _ = mmdet_fixture.load(name)
    sd, _ = checkpoint(name, "mmdet2")
    version = "0.5.2" if meta["kind"] == "retina" else "1.0.0"
    return downgrade(sd, meta["kind"]), {"mmdet_version": version, "config": v1_config_text(meta),
                                         "CLASSES": list(labels.COCO_CLASSES)}


@functools.lru_cache(maxsize=None)
def v1_conversion(name):
    sd, meta = v1_checkpoint(name)
    spec = mmdet.describe(meta, state_dict=sd)
    return spec, mmdet.convert(sd, spec)


@pytest.mark.parametrize("name", FIXTURES)
def test_v1_file_converts_as_the_upgraded_file(name):
    spec, weights = v1_conversion(name)
    assert spec.pop("mmdet_v1") is True
    spec2, weights2 = conversion(name, "mmdet2")
    assert "mmdet_v1" not in spec2  # a 2.x file with the legacy_1.x config: legacy settings, 2.x weights
    assert spec == spec2 and sorted(weights) == sorted(weights2)
    for key, value in weights2.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    model = mmdet.tfdet_config(spec).model
    dense = model.retina if "retina" in model else model.rpn
    assert dense.box_convention == "legacy_v1"
    if "roi" in model:
        assert (model.roi.box_convention, model.roi.sampling_ratio, model.roi.aligned) == ("legacy_v1", 2, False)


@pytest.mark.parametrize("name", FIXTURES)
def test_v1_stages_and_detections_equal_mmdetection(name):
    """The converted model (shared with the upgraded 2.x file: the same spec and weights, checked above) on the
    fixture: every stage, proposals and detections."""
    meta, arrays, _, model, images, sizes, out = converted(name)
    assert_model_stages(meta, arrays, model, images, sizes)
    count = int(out["num_detections"][0])
    assert count == len(arrays["stage/det/boxes"]) == meta["num_detections"]
    mmdet_fixture.assert_same_set(out["detection_boxes"][0, :count], out["detection_scores"][0, :count],
                                  arrays["stage/det/boxes"], arrays["stage/det/scores"])
    np.testing.assert_array_equal(out["detection_classes"][0, :count], arrays["stage/det/labels"])


def test_v1_layout_without_meta_and_the_arch_name():
    """No meta at all: the 1.x two-stage layout (bbox_head. next to rpn_head.) is recognised; the arch name's
    legacy_1.x model; the same weights."""
    name = "faster_rcnn_r50_fpn_1x_coco_v1"
    sd, _ = v1_checkpoint(name)
    assert legacy_v1.is_v1({}, sd) and not legacy_v1.is_v1({}, checkpoint(name, "mmdet2")[0])
    assert legacy_v1.is_v1({"mmdet_version": "1.0rc1"}) and not legacy_v1.is_v1({"mmdet_version": "2.25.0"}, sd)
    spec = mmdet.describe({}, arch="faster_rcnn_r50_fpn", state_dict=sd)
    assert spec["mmdet_v1"] and spec["num_classes"] == 80
    rpn, roi = spec["model"]["rpn_head"], spec["model"]["roi_head"]
    assert rpn["anchor_generator"]["type"] == "LegacyAnchorGenerator" and rpn["anchor_generator"]["center_offset"] == 0.5
    assert rpn["bbox_coder"]["type"] == roi["bbox_head"]["bbox_coder"]["type"] == "LegacyDeltaXYWHBBoxCoder"
    assert roi["bbox_roi_extractor"]["roi_layer"] == dict(type="RoIAlign", output_size=7, sampling_ratio=2, aligned=False)
    weights, want = mmdet.convert(sd, spec), v1_conversion(name)[1]
    assert sorted(weights) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def test_v1_mask_and_dcn_moves():
    """Mask R-CNN's conv_logits loses its background channel; DCN offsets move under conv2 (no fixture: keys
    and shapes of a 1.x Mask R-CNN with DCN in c3-c5, values numbered)."""
    spec = mmdet.describe({}, arch="mask_rcnn_r50_dconv_c3-c5_fpn")
    shapes = mmdet.expected_shapes(spec)
    sd2 = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + i for i, (k, s) in enumerate(shapes.items())}
    sd1 = {k.replace("conv2.conv_offset.", "conv2_offset."): v for k, v in downgrade(sd2, "two_stage").items()}
    assert "backbone.layer2.0.conv2_offset.weight" in sd1 and sd1["mask_head.conv_logits.bias"].shape == (81,)
    meta = {"mmdet_version": "1.1.0"}
    spec1 = mmdet.describe(meta, arch="mask_rcnn_r50_dconv_c3-c5_fpn", state_dict=sd1)
    weights, want = mmdet.convert(sd1, spec1), mmdet.convert(sd2, spec)
    assert sorted(weights) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    model = mmdet.tfdet_config(spec1).model
    assert (model.mask.sampling_ratio, model.mask.aligned, model.roi.box_convention) == (2, False, "legacy_v1")


def test_v1_models_not_covered_are_refused():
    meta, _ = mmdet_fixture.load("faster_rcnn_r50_fpn_1x_coco_v1")
    text = v1_config_text(meta).replace("type='FasterRCNN'", "type='CascadeRCNN'")
    with pytest.raises(common.UnsupportedError, match="1.x checkpoints of CascadeRCNN"):
        mmdet.describe({"mmdet_version": "1.0.0", "config": text})
    with pytest.raises(common.UnsupportedError, match="1.x checkpoints of rpn"):
        mmdet.describe({"mmdet_version": "1.0.0"}, arch="rpn_r50_fpn")
    text = v1_config_text(meta).replace("nms_post=1000", "nms_post=300")
    with pytest.raises(common.UnsupportedError, match="nms_post"):
        mmdet.describe({"mmdet_version": "1.0.0", "config": text})
