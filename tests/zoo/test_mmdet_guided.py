"""mmdetection Guided Anchoring models (GA-RPN, GA-Faster R-CNN, GA-RetinaNet; caffe-style R-50 FPN) converted by
tfdet.zoo.mmdet (its guided.py families) and run by tfdet's own detector built from the converted config,
against the reference fixtures. Both checkpoint layouts (test_mmdet_convert_models.checkpoint: 2.x meta and
keys; 3.x meta, and the GA-RPN detector's head under `bbox_head.`) convert to the same spec and weights, so
one model per fixture is compared.

Compared (mmdet_conventions.md 2.5, 2.13): the caffe backbone on BGR input, FPN, the guided anchoring heads
(location, shape, and the outputs after the feature adaption's deformable conv) within 1e-4 of each stage's
largest value; proposals and detections as sets (boxes 1e-2 px, scores 1e-4); GA-Faster R-CNN's box head on the
reference proposals."""

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import mmdet_fixture
from tests.zoo.test_mmdet_convert_models import assert_same_conversion, assert_stages, converted
from tfdet.modeling.detectors.base import zero_outside
from tfdet.zoo import mmdet

NAMES = ["ga_rpn_r50_caffe_fpn", "ga_faster_rcnn_r50_caffe_fpn", "ga_retinanet_r50_caffe_fpn"]
CASES = [pytest.param(name, marks=() if name == "ga_rpn_r50_caffe_fpn" else pytest.mark.slow) for name in NAMES]
HEAD_STAGES = {"loc": "loc", "shape": "shape", "objectness": "cls", "cls": "cls", "deltas": "reg"}  # tfdet: mmdet


def iou(a, b):
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_same_proposals(boxes, scores, arrays, nms_iou):
    """Proposals as a set. GA-RPN's fixture holds one pair of overlapping candidates tied to float32 noise
    (scores 0.9081633 / 0.9081602): it decides 2 of the 1000 proposals (the survivor, and a box it suppresses or
    not); a missing proposal must have such a twin among the extra ones (tied to 1e-5, IoU beyond the NMS's)."""
    expected, expected_scores = arrays["stage/proposals/boxes"], arrays["stage/proposals/scores"]
    missing, extra = mmdet_fixture.assert_same_set(boxes, scores, expected, expected_scores, max_flips=2)
    if missing:
        first = missing[0]
        twins = [j for j in extra if abs(scores[j] - expected_scores[first]) < 1e-5
                 and iou(boxes[j], expected[first]) > nms_iou]
        assert twins, (first, expected[first], expected_scores[first])


@pytest.mark.parametrize("name", NAMES)
def test_both_layouts_convert_the_same(name):
    assert_same_conversion(name, "mmdet3")


@pytest.mark.parametrize("name", CASES)
def test_guided_anchoring_equals_mmdetection(name):
    meta, arrays, spec, model, images, sizes, out = converted(name)
    assert spec["arch"] == name and spec["family"] == name.rsplit("_r50", 1)[0]
    assert spec["input"]["bgr"] and model.model_config.backbone.style == "caffe"
    pyramid = model.features(images, image_sizes=sizes)
    features = {int(k): v for k, v in model.backbone(zero_outside((images - model.pixel_mean) / model.pixel_std,
                                                                  sizes)).items()}
    levels = [int(lvl[1:]) for lvl in meta["levels"]]
    stages = {f"stage/backbone/c{lvl}": features[lvl] for lvl in range(levels[0], 6)}
    stages.update({f"stage/neck/p{lvl}": pyramid[lvl] for lvl in levels})
    head = model.head if meta["kind"] == "ga_retina" else model.rpn_head
    where = "head" if meta["kind"] == "ga_retina" else "rpn"
    outputs = head([pyramid[lvl] for lvl in levels])
    for key, values in outputs.items():
        stages.update({f"stage/{where}/{HEAD_STAGES[key]}/p{lvl}": v for lvl, v in zip(levels, values)})
    assert len(stages) == len(levels) * 5 + 6 - levels[0]
    assert_stages(arrays, stages)

    if meta["kind"] != "ga_retina":
        test = meta["test_cfg"]["rpn"]
        rpn = model.model_config.rpn
        assert (rpn.type, rpn.pre_nms_top_k_test, rpn.max_proposals_test) == ("GARPN", test["nms_pre"],
                                                                                test["max_per_img"])
        proposals = model.rpn.proposals(outputs, sizes)
        count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
        assert_same_proposals(proposals.boxes[0, :count].numpy(), proposals.scores[0, :count].numpy(), arrays,
                              test["nms"]["iou_threshold"])
    if meta["kind"] == "ga_rpn":  # the RPN detector outputs its proposals
        count = int(out["num_detections"][0])
        assert_same_proposals(out["detection_boxes"][0, :count].numpy(), out["detection_scores"][0, :count].numpy(),
                              arrays, meta["test_cfg"]["rpn"]["nms"]["iou_threshold"])
        return
    if meta["kind"] == "two_stage":  # the box head on the reference proposals
        pooled = model.box_roi_align(pyramid, tf.constant(arrays["stage/proposals/boxes"][None]))
        cls_score, bbox_pred = model.bbox_head(pooled)
        assert_stages(arrays, {"stage/roi/s1/feats": pooled[0], "stage/roi/s1/cls_score": cls_score[0],
                               "stage/roi/s1/bbox_pred": bbox_pred[0]})
    count = int(out["num_detections"][0])
    assert count == len(arrays["stage/det/boxes"]) == meta["num_detections"]
    mmdet_fixture.assert_same_set(out["detection_boxes"][0, :count], out["detection_scores"][0, :count],
                                  arrays["stage/det/boxes"], arrays["stage/det/scores"])
    np.testing.assert_array_equal(out["detection_classes"][0, :count], arrays["stage/det/labels"])


def test_unsupported_guided_settings_are_named():
    """Settings tfdet does not reproduce are refused with the config field named."""
    arch = mmdet.parse_arch("ga_faster_rcnn_r50_caffe_fpn")
    assert mmdet.parse_arch("ga-retinanet_r50-caffe_fpn_1x_coco").family == "ga_retinanet"
    model = mmdet.FAMILIES["ga_faster_rcnn"].mmdet_model(arch)
    spec = mmdet.describe({"config": f"model = {model!r}\n"})
    assert spec["family"] == "ga_faster_rcnn" and spec["num_classes"] == 80
    config = mmdet.tfdet_config(spec)
    assert (config.model.rpn.type, config.model.rpn.max_proposals_test, config.model.roi.score_threshold) == (
        "GARPN", 300, 1e-3)
    for field, edit in (("nms_post", lambda m: m["test_cfg"]["rpn"].update(nms_post=100)),
                        ("square_anchor_generator.scales",
                         lambda m: m["rpn_head"]["square_anchor_generator"].update(scales=[4])),
                        ("anchor_coder.target_means",
                         lambda m: m["rpn_head"]["anchor_coder"].update(target_means=[0.1] * 4))):
        bad = mmdet.FAMILIES["ga_faster_rcnn"].mmdet_model(arch)
        edit(bad)
        with pytest.raises(mmdet.common.UnsupportedError, match=field):
            mmdet.tfdet_config(mmdet.describe({"config": f"model = {bad!r}\n"}))
