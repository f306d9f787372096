"""GA-RPN R-50-caffe-FPN (mmdetection ga-rpn_r50-caffe_fpn_1x_coco) in tfdet's parts against the reference
fixture: the caffe-style backbone on BGR input, FPN, the guided anchoring head (location, shape, feature
adaption with a 4-group deformable conv, objectness, deltas) and the proposals (location filter 0.01,
guided anchors, per-level NMS): mmdet_conventions.md 2.5."""

import pytest
import tensorflow as tf

from tests.zoo import mmdet_fixture
from tests.zoo.mmdet_fixture import assign, conv_kernel
from tfdet.modeling.backbones.weights import load_torch_state_dict
from tfdet.modeling.dense_heads.ga_head import GAAnchors, GARPNHead, ga_rpn_proposals
from tfdet.modeling.necks.fpn import FPN

pytestmark = pytest.mark.slow
LEVELS = (2, 3, 4, 5, 6)


def test_ga_rpn_stages_equal_mmdetection():
    meta, arrays = mmdet_fixture.load("ga_rpn_r50_caffe_fpn")
    w = mmdet_fixture.weights(meta, arrays)
    backbone = mmdet_fixture.tfdet_backbone(meta["backbone"])
    load_torch_state_dict(backbone, {k: v for k, v in w.items() if k.startswith("backbone.")})
    feats = backbone(mmdet_fixture.network_input(meta, arrays))
    fpn = FPN(256, min_level=2, max_level=6, extra="maxpool")
    fpn.build({lvl: feats[lvl].shape for lvl in (2, 3, 4, 5)})
    for i in range(4):
        assign(fpn.lateral_convs[i], conv_kernel(w[f"neck.lateral_convs.{i}.conv.weight"]),
               w[f"neck.lateral_convs.{i}.conv.bias"])
        assign(fpn.output_convs[i], conv_kernel(w[f"neck.fpn_convs.{i}.conv.weight"]), w[f"neck.fpn_convs.{i}.conv.bias"])
    pyramid = fpn(feats)
    head = GARPNHead(256, 4)
    head.build([pyramid[lvl].shape for lvl in LEVELS])
    for layer, key in ((head.conv, "rpn_conv"), (head.conv_loc, "conv_loc"), (head.conv_shape, "conv_shape"),
                       (head.cls, "conv_cls"), (head.reg, "conv_reg")):  # 2.x layout: `rpn_head.`
        assign(layer, conv_kernel(w[f"rpn_head.{key}.weight"]), w[f"rpn_head.{key}.bias"])
    head.adaption.conv_offset.kernel.assign(conv_kernel(w["rpn_head.feature_adaption.conv_offset.weight"]))
    head.adaption.conv_adaption.kernel.assign(conv_kernel(w["rpn_head.feature_adaption.conv_adaption.weight"]))
    outputs = head([pyramid[lvl] for lvl in LEVELS])
    errors = {}
    for what, name in (("loc", "loc"), ("shape", "shape"), ("objectness", "cls"), ("deltas", "reg")):
        for lvl, x in zip(LEVELS, outputs[what]):
            errors[f"{name} p{lvl}"] = mmdet_fixture.relative_error(arrays, f"stage/rpn/{name}/p{lvl}", x.numpy())
    assert max(errors.values()) < 1e-4, errors

    test = meta["test_cfg"]["rpn"]
    proposals = ga_rpn_proposals(outputs, GAAnchors(), tf.constant([meta["image"]["size"]], tf.float32),
                                 pre_nms_top_k=test["nms_pre"], max_proposals=test["max_per_img"],
                                 nms_iou=test["nms"]["iou_threshold"], min_size=float(test["min_bbox_size"]),
                                 box_stds=(0.07, 0.07, 0.11, 0.11))
    count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
    # One pair of overlapping candidates is tied to float32 noise (scores 0.9081633 / 0.9081602): it decides
    # 2 of the 1000 proposals (the survivor, and a box that it suppresses or not).
    boxes, scores = proposals.boxes[0, :count].numpy(), proposals.scores[0, :count].numpy()
    expected, expected_scores = arrays["stage/proposals/boxes"], arrays["stage/proposals/scores"]
    missing, extra = mmdet_fixture.assert_same_set(boxes, scores, expected, expected_scores, max_flips=2)
    if missing:  # the flip is that tie: the best missing box has a twin, tied to 1e-5, overlapping beyond 0.7
        first = missing[0]
        twins = [j for j in extra if abs(scores[j] - expected_scores[first]) < 1e-5
                 and iou(boxes[j], expected[first]) > test["nms"]["iou_threshold"]]
        assert twins, (first, expected[first], expected_scores[first])


def iou(a, b):
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
