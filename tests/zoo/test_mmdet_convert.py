"""tfdet.zoo.mmdet without building detectors: checkpoint meta (2.x / 3.x), the config text read safely, arch
names, the config the converter writes (caffe BGR, RetinaNet, test_cfg, class names and ids), the weight
transforms (conv1 BGR, fc6 flatten order), one error for bad keys, --num_classes."""

import json

import numpy as np
import pytest

from tests.zoo import mmdet_fixture
from tests.zoo.test_mmdet_convert_models import checkpoint, config_text
from tfdet.zoo import mmdet
from tfdet.zoo.classes import class_indices
from tfdet.zoo.mmdet import labels, pyconfig


def test_config_text_reads_literals_only(tmp_path):
    marker = tmp_path / "executed"
    text = f"""
_base_ = ['../_base_/models/faster-rcnn_r50_fpn.py']
import os
model = dict(type='FasterRCNN', backbone=dict(depth=50, strides=(1, 2, 2, 2), style="caffe", dcn=None,
             frozen=True), test_cfg={{'rcnn': dict(score_thr=0.05 * 2, nms=dict(iou_threshold=-(-0.5)))}},
             sizes=list([1, 2]), pair=tuple((3, 4)), flag=not_a_literal if False else 1)
lr = 0.02 / 8
hook = __import__('os').system('touch {marker}')
opened = open('{marker}', 'w')
a = b = [dict(x=1)]
"""
    parsed = pyconfig.parse_config(text)
    assert not marker.exists()
    assert parsed["hook"] is pyconfig.UNREADABLE and parsed["opened"] is pyconfig.UNREADABLE
    assert parsed["model"] is pyconfig.UNREADABLE  # one part is not a literal: the whole value is unreadable
    assert parsed["lr"] == 0.0025 and parsed["a"] == parsed["b"] == [{"x": 1}]
    assert parsed["_base_"] == ["../_base_/models/faster-rcnn_r50_fpn.py"]
    model = pyconfig.parse_config(text.replace("flag=not_a_literal if False else 1", "flag=1"))["model"]
    assert model == {"type": "FasterRCNN", "backbone": {"depth": 50, "strides": (1, 2, 2, 2), "style": "caffe",
                                                         "dcn": None, "frozen": True},
                     "test_cfg": {"rcnn": {"score_thr": 0.1, "nms": {"iou_threshold": 0.5}}}, "sizes": [1, 2],
                     "pair": (3, 4), "flag": 1}
    with pytest.raises(ValueError, match="not Python"):
        pyconfig.parse_config("model = dict(")


def test_checkpoint_meta_of_both_versions(tmp_path):
    names = ["cat", "dog"]
    assert mmdet.checkpoint.class_names({"CLASSES": names, "config": "x = 1"}) == names
    assert mmdet.checkpoint.class_names({"dataset_meta": {"classes": tuple(names), "palette": []}}) == names
    assert mmdet.checkpoint.class_names({"dataset_meta": {"CLASSES": names}}) == names  # early 3.0 rc files
    assert mmdet.checkpoint.class_names({}) is None
    assert mmdet.checkpoint.config_text({"cfg": "a = 1"}) == "a = 1"
    assert mmdet.checkpoint.config_text({"config": "a = 2"}) == "a = 2"
    sd = {"a.weight": np.ones((2, 3), np.float32)}
    path = tmp_path / "meta.npz"
    np.savez(path, __meta__=json.dumps({"CLASSES": names}), **sd)
    read = mmdet.read_checkpoint(path)
    assert read.meta == {"CLASSES": names} and list(read.state_dict) == ["a.weight"]
    np.savez(tmp_path / "plain.npz", **sd)
    assert mmdet.read_checkpoint(tmp_path / "plain.npz").meta == {}
    np.savez(tmp_path / "bad.npz", __meta__="not json", **sd)
    with pytest.raises(ValueError, match="not JSON"):
        mmdet.read_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        mmdet.read_checkpoint(tmp_path / "none.npz")


@pytest.mark.parametrize("name, expected", [
    ("faster_rcnn_r50_fpn", ("faster_rcnn", 50, 1, 64, "pytorch", None)),
    ("faster_rcnn_r50_fpn_dconv_c3-c5_1x_coco", ("faster_rcnn", 50, 1, 64, "pytorch", "DCN")),  # 2.x file name
    ("mask-rcnn_r50-mdconv-c3-c5_fpn_1x_coco", ("mask_rcnn", 50, 1, 64, "pytorch", "DCNv2")),  # 3.x config name
    ("mask_rcnn_x101_32x4d_fpn", ("mask_rcnn", 101, 32, 4, "pytorch", None)),
    ("retinanet_x101_64x4d_fpn_1x_coco", ("retinanet", 101, 64, 4, "pytorch", None)),
    ("retinanet_r50_caffe_fpn", ("retinanet", 50, 1, 64, "caffe", None)),
    ("rpn_r101_fpn_2x_coco", ("rpn", 101, 1, 64, "pytorch", None)),
])
def test_arch_names(name, expected):
    arch = mmdet.parse_arch(name)
    assert (arch.family, arch.depth, arch.groups, arch.base_width, arch.style, arch.dcn) == expected
    assert mmdet.parse_arch(arch.name()) == arch


@pytest.mark.parametrize("name, message", [("yolo_r50_fpn", "unknown family"), ("faster_rcnn_r50", "no 'fpn'"),
                                           ("faster_rcnn_fpn", "no backbone"), ("faster_rcnn_r50_gn_fpn", "'gn'")])
def test_bad_arch_names(name, message):
    with pytest.raises(ValueError, match=message):
        mmdet.parse_arch(name)


def test_without_config_the_arch_is_required():
    with pytest.raises(ValueError, match="pass --arch"):
        mmdet.describe({"CLASSES": list(labels.COCO_CLASSES)})
    spec = mmdet.describe({"CLASSES": list(labels.COCO_CLASSES)}, arch="faster_rcnn_r50_caffe_fpn")
    assert spec["model"]["backbone"]["style"] == "caffe" and spec["input"]["bgr"]
    with pytest.raises(ValueError, match="no readable `model"):  # a config whose model is not literal
        mmdet.describe({"config": "model = build()"})
    assert mmdet.describe({"config": "model = build()"}, arch="retinanet_r50_fpn")["family"] == "retinanet"


def test_the_arch_must_agree_with_the_config():
    meta, _ = mmdet_fixture.load("faster_rcnn_r50_fpn")
    text = config_text(meta, "mmdet3")
    assert mmdet.describe({"cfg": text}, arch="faster_rcnn_r50_fpn_1x_coco")["arch"] == "faster_rcnn_r50_fpn"
    for arch in ("faster_rcnn_r50_caffe_fpn", "mask_rcnn_r50_fpn", "faster_rcnn_r101_fpn"):
        with pytest.raises(ValueError, match="contradicts the checkpoint's config"):
            mmdet.describe({"cfg": text}, arch=arch)


def test_config_settings_come_from_the_config_text():
    meta, _ = mmdet_fixture.load("mask_rcnn_r50_fpn")
    text = config_text(meta, "mmdet2").replace("score_thr=0.05", "score_thr=0.3").replace(
        "mask_thr_binary=0.5", "mask_thr_binary=0.4").replace("nms_pre=1000", "nms_pre=500").replace(
        "img_scale=(1333, 800)", "img_scale=(1000, 600)")
    config = mmdet.tfdet_config(mmdet.describe({"config": text}))
    model = config.model
    assert model.type == "MaskRCNN" and model.num_classes == 80
    assert model.roi.score_threshold == 0.3 and model.roi.max_detections == 50 and model.roi.nms_iou == 0.5
    assert model.mask.threshold == 0.4 and model.rpn.pre_nms_top_k_test == 500 and model.rpn.nms_iou == 0.7
    assert model.backbone.style == "pytorch" and model.zero_padding_after_normalize
    assert model.pixel_mean == (123.675, 116.28, 103.53) and model.pixel_std == (58.395, 57.12, 57.375)
    assert tuple(config.data.scale) == (1000, 600) and config.data.pad_to_multiple == 32


def test_caffe_style_is_bgr_reversed_into_rgb():
    meta, arrays = mmdet_fixture.load("faster_rcnn_r50_fpn")
    sd = mmdet_fixture.weights(meta, arrays)
    caffe = mmdet.describe(arch="faster_rcnn_r50_caffe_fpn", state_dict=sd)
    config = mmdet.tfdet_config(caffe)
    assert config.model.backbone.style == "caffe"
    assert config.model.pixel_mean == (123.675, 116.28, 103.53) and config.model.pixel_std == (1.0, 1.0, 1.0)
    conv1 = mmdet.convert(sd, caffe)["conv1/kernel"]
    np.testing.assert_array_equal(conv1, sd["backbone.conv1.weight"][:, ::-1].transpose(2, 3, 1, 0))
    pytorch = mmdet.convert(sd, mmdet.describe(arch="faster_rcnn_r50_fpn", state_dict=sd))["conv1/kernel"]
    np.testing.assert_array_equal(pytorch, sd["backbone.conv1.weight"].transpose(2, 3, 1, 0))


def test_retinanet_config_reproduces_mmdetection():
    retina = mmdet.tfdet_config(mmdet.describe(arch="retinanet_r50_fpn")).model
    assert (retina.neck.min_level, retina.neck.max_level, retina.neck.extra) == (3, 7, "conv")
    assert retina.neck.extra_source == "input" and not retina.neck.relu_before_extra
    assert retina.retina.topk_mode == "anchor_class" and retina.retina.min_size == 0.0
    assert retina.retina.max_detections == 100 and retina.backbone.out_levels == (3, 4, 5)


def test_fc6_rows_follow_tfdet_flatten_order():
    meta, arrays = mmdet_fixture.load("faster_rcnn_r50_fpn")
    sd = mmdet_fixture.weights(meta, arrays)
    w = mmdet.convert(sd, mmdet.describe(arch="faster_rcnn_r50_fpn", state_dict=sd))
    x = np.random.default_rng(0).normal(size=(256, 7, 7)).astype(np.float32)  # (C, H, W)
    torch_fc6 = sd["roi_head.bbox_head.shared_fcs.0.weight"] @ x.reshape(-1)
    tfdet_fc6 = x.transpose(1, 2, 0).reshape(-1) @ w["bbox_head/fc1/kernel"]  # tfdet flattens (H, W, C)
    np.testing.assert_allclose(tfdet_fc6, torch_fc6, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(w["bbox_head/cls/kernel"], sd["roi_head.bbox_head.fc_cls.weight"].T)  # bg last both


def test_bad_state_dict_is_one_error_listing_every_key():
    sd, meta = checkpoint("faster_rcnn_r50_fpn", "mmdet2")
    del sd["rpn_head.rpn_cls.bias"], sd["backbone.layer1.0.bn1.running_var"]
    sd["roi_head.bbox_head.shared_fcs.1.weight"] = sd["roi_head.bbox_head.shared_fcs.1.weight"][:, :10]
    sd["extra.weight"] = np.zeros(3, np.float32)
    spec = mmdet.describe(meta, state_dict=sd)
    with pytest.raises(ValueError) as err:
        mmdet.convert(sd, spec)
    message = str(err.value)
    for key in ("rpn_head.rpn_cls.bias", "backbone.layer1.0.bn1.running_var", "extra.weight",
                "roi_head.bbox_head.shared_fcs.1.weight (1024, 10) (expected (1024, 1024))"):
        assert key in message, message
    assert "missing (2)" in message and "unexpected (1)" in message and "mis-shaped (1)" in message


def test_rpn_detector_both_layouts_convert_the_same():
    sd2, meta2 = checkpoint("rpn_r50_fpn", "mmdet2")
    sd3, meta3 = checkpoint("rpn_r50_fpn", "mmdet3")
    assert any(k.startswith("bbox_head.") for k in sd3) and not any(k.startswith("rpn_head.") for k in sd3)
    spec = mmdet.describe(meta2, state_dict=sd2)
    assert spec == mmdet.describe(meta3, state_dict=sd3) and spec["num_classes"] == 1
    w2, w3 = mmdet.convert(sd2, spec), mmdet.convert(sd3, spec)
    assert sorted(w2) == sorted(w3) and "rpn_head/rpn_cls/kernel" in w2
    for key, value in w2.items():
        np.testing.assert_array_equal(w3[key], value)


def test_class_names_and_category_ids():
    sd, meta = checkpoint("faster_rcnn_r50_fpn", "mmdet3")
    data = mmdet.tfdet_config(mmdet.describe(meta, state_dict=sd)).data
    assert list(data.class_names) == list(labels.COCO_CLASSES)
    assert list(data.category_ids)[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    assert list(data.category_ids)[-1] == 90 and len(set(data.category_ids)) == 80
    shuffled = list(reversed(labels.COCO_CLASSES))  # COCO's names in another order: ids follow the names
    assert labels.category_ids(shuffled, 80)[0] == 90
    assert labels.category_ids(["cat", "dog"], 2) == [1, 2]
    assert labels.category_ids(None, 3) == [1, 2, 3]
    no_names = mmdet.tfdet_config(mmdet.describe(arch="faster_rcnn_r50_fpn", state_dict=sd)).data
    assert list(no_names.class_names) == list(labels.COCO_CLASSES)  # mmdet's fallback for 80 classes
    with pytest.raises(ValueError, match="names 2 classes but its model has 80"):
        mmdet.describe({**meta, "dataset_meta": {"classes": ["cat", "dog"]}}, state_dict=sd)


def test_num_classes_leaves_out_the_class_layers():
    sd, meta = checkpoint("mask_rcnn_r50_fpn", "mmdet2")
    spec = mmdet.describe(meta, state_dict=sd)
    full, fine = mmdet.convert(sd, spec), mmdet.convert(sd, spec, num_classes=3)
    assert sorted(set(full) - set(fine)) == sorted(k for k in full if k.startswith(mmdet.two_stage.CLASS_LAYERS))
    assert len(full) - len(fine) == 6
    config = mmdet.tfdet_config(spec, num_classes=3)
    assert config.model.num_classes == 3  # other categories: named by the user's annotations
    assert config.data.category_ids is None and config.data.class_names is None
    np.testing.assert_array_equal(fine["mask_head/conv1/kernel"], full["mask_head/conv1/kernel"])


def test_classes_keep_the_chosen_source_classes():
    sd, meta = checkpoint("mask_rcnn_r50_fpn", "mmdet2")
    spec = mmdet.describe(meta, state_dict=sd)
    ids, names = mmdet.source_classes(spec)
    keep = class_indices(["car", "1"], ids, names)  # by name and by COCO id
    assert keep == [2, 0]
    full, chosen = mmdet.convert(sd, spec), mmdet.convert(sd, spec, classes=keep)
    assert sorted(chosen) == sorted(full)
    for path, value in full.items():
        if not path.startswith(mmdet.two_stage.CLASS_LAYERS):
            np.testing.assert_array_equal(chosen[path], value)
    np.testing.assert_array_equal(chosen["bbox_head/cls/kernel"], full["bbox_head/cls/kernel"][:, [2, 0, 80]])
    np.testing.assert_array_equal(chosen["bbox_head/reg/bias"], full["bbox_head/reg/bias"][[8, 9, 10, 11, 0, 1, 2, 3]])
    np.testing.assert_array_equal(chosen["mask_head/logits/bias"], full["mask_head/logits/bias"][keep])
    # mmdet's own rows: fc_cls row 2 (car) is the kept class 0
    np.testing.assert_array_equal(chosen["bbox_head/cls/bias"][0], sd["roi_head.bbox_head.fc_cls.bias"][2])
    config = mmdet.tfdet_config(spec, classes=keep)
    assert config.model.num_classes == 2 and list(config.data.category_ids) == [3, 1]
    assert list(config.data.class_names) == ["car", "person"]
    with pytest.raises(ValueError, match="not both"):
        mmdet.convert(sd, spec, num_classes=3, classes=keep)


def test_unsupported_settings_name_the_field():
    meta, _ = mmdet_fixture.load("faster_rcnn_r50_fpn")
    text = config_text(meta, "mmdet3")
    for old, new, field in (("type='ResNet'", "type='RegNet'", "model.backbone.type"),
                            ("sampling_ratio=0", "sampling_ratio=2", "roi_layer.sampling_ratio"),
                            ("type='FPN'", "type='PAFPN'", "model.neck.type")):
        assert old in text
        with pytest.raises(ValueError, match=field):
            mmdet.tfdet_config(mmdet.describe({"cfg": text.replace(old, new, 1)}))


def test_class_agnostic_regressors_fit_any_class_set():
    """Cascade stages regress class-agnostically: --num_classes and --classes keep their regressors."""
    sd, meta = checkpoint("cascade_rcnn_r50_fpn", "mmdet2")
    spec = mmdet.describe(meta, state_dict=sd)
    assert mmdet.class_layers(spec) == ("bbox_head1/cls/", "bbox_head2/cls/", "bbox_head3/cls/")
    full = mmdet.convert(sd, spec)
    for converted in (mmdet.convert(sd, spec, num_classes=3), mmdet.convert(sd, spec, classes=[2, 0])):
        for t in (1, 2, 3):
            np.testing.assert_array_equal(converted[f"bbox_head{t}/reg/kernel"], full[f"bbox_head{t}/reg/kernel"])
    chosen = mmdet.convert(sd, spec, classes=[2, 0])
    np.testing.assert_array_equal(chosen["bbox_head3/cls/bias"], full["bbox_head3/cls/bias"][[2, 0, 80]])
    faster_sd, faster_meta = checkpoint("faster_rcnn_r50_fpn", "mmdet2")
    assert "bbox_head/reg/" in mmdet.class_layers(mmdet.describe(faster_meta, state_dict=faster_sd))
