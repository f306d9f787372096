"""Faster R-CNN R-50-FPN (mmdetection faster-rcnn_r50_fpn_1x_coco) stage by stage in tfdet's parts, against
the reference fixture: backbone, FPN, RPN head, proposals, RoI features, box head, detections.

Composed by hand from today's layers and pure functions (no converter yet), each stage fed the
reference's previous stage so that errors do not compound. This pins the
"=" entries of tools/zoo_reference/mmdet_conventions.md for Faster R-CNN (anchors, proposal rule, RoIAlign
and level mapping, fc6 flatten order, class layout, multiclass NMS)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import mmdet_fixture
from tests.zoo.mmdet_fixture import assign, conv_kernel as conv
from tfdet.layers.roi_align import MultiLevelRoIAlign
from tfdet.modeling.backbones.weights import load_torch_state_dict
from tfdet.modeling.dense_heads.rpn import RPNHead, rpn_proposals
from tfdet.modeling.necks.fpn import FPN
from tfdet.modeling.roi_heads.bbox_head import BBoxHead, bbox_detections
from tfdet.ops.anchors import AnchorGenerator

TOLERANCE = 1e-4
LEVELS = (2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def reference():
    meta, arrays = mmdet_fixture.load("faster_rcnn_r50_fpn")
    return meta, arrays, mmdet_fixture.weights(meta, arrays)


def fpn_of(weights, shapes):
    fpn = FPN(256, min_level=2, max_level=6, extra="maxpool")
    fpn.build(shapes)
    for i, lvl in enumerate((2, 3, 4, 5)):
        assign(fpn.lateral_convs[i], conv(weights[f"neck.lateral_convs.{i}.conv.weight"]),
               weights[f"neck.lateral_convs.{i}.conv.bias"])
        assign(fpn.output_convs[i], conv(weights[f"neck.fpn_convs.{i}.conv.weight"]),
               weights[f"neck.fpn_convs.{i}.conv.bias"])
    return fpn


def box_head_of(weights, pooled_shape):
    head = BBoxHead(80, 1024)
    head.build(pooled_shape)
    fc6 = weights["roi_head.bbox_head.shared_fcs.0.weight"]  # [1024, 256 * 7 * 7], (C, H, W) flatten order
    fc6 = fc6.reshape(1024, 256, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * 256, 1024)  # tfdet flattens (H, W, C)
    assign(head.fcs[0], fc6, weights["roi_head.bbox_head.shared_fcs.0.bias"])
    assign(head.fcs[1], weights["roi_head.bbox_head.shared_fcs.1.weight"].T, weights["roi_head.bbox_head.shared_fcs.1.bias"])
    assign(head.cls, weights["roi_head.bbox_head.fc_cls.weight"].T, weights["roi_head.bbox_head.fc_cls.bias"])
    assign(head.reg, weights["roi_head.bbox_head.fc_reg.weight"].T, weights["roi_head.bbox_head.fc_reg.bias"])
    return head


@pytest.mark.slow
def test_faster_rcnn_stages_equal_mmdetection(reference):
    meta, arrays, weights = reference
    errors = {}
    backbone = mmdet_fixture.tfdet_backbone(meta["backbone"])
    load_torch_state_dict(backbone, {k: v for k, v in weights.items() if k.startswith("backbone.")})
    feats = backbone(mmdet_fixture.network_input(meta, arrays))
    for lvl in (2, 3, 4, 5):
        errors[f"c{lvl}"] = mmdet_fixture.relative_error(arrays, f"stage/backbone/c{lvl}", feats[lvl].numpy())

    fpn = fpn_of(weights, {lvl: feats[lvl].shape for lvl in (2, 3, 4, 5)})
    pyramid = fpn(feats)
    for lvl in LEVELS:
        errors[f"p{lvl}"] = mmdet_fixture.relative_error(arrays, f"stage/neck/p{lvl}", pyramid[lvl].numpy())

    rpn = RPNHead(3, 256)
    rpn.build([pyramid[lvl].shape for lvl in LEVELS])
    assign(rpn.conv, conv(weights["rpn_head.rpn_conv.weight"]), weights["rpn_head.rpn_conv.bias"])
    assign(rpn.cls, conv(weights["rpn_head.rpn_cls.weight"]), weights["rpn_head.rpn_cls.bias"])
    assign(rpn.reg, conv(weights["rpn_head.rpn_reg.weight"]), weights["rpn_head.rpn_reg.bias"])
    objectness, deltas = rpn([pyramid[lvl] for lvl in LEVELS])
    for lvl, o, d in zip(LEVELS, objectness, deltas):
        errors[f"rpn_cls p{lvl}"] = mmdet_fixture.relative_error(arrays, f"stage/rpn/cls/p{lvl}", o.numpy())
        errors[f"rpn_reg p{lvl}"] = mmdet_fixture.relative_error(arrays, f"stage/rpn/reg/p{lvl}", d.numpy())
    assert max(errors.values()) < TOLERANCE, errors

    image_size = tf.constant([meta["image"]["size"]], tf.float32)
    anchors = AnchorGenerator((4, 8, 16, 32, 64), scales=(8,))([o.shape[1:3] for o in objectness])
    proposals = rpn_proposals(objectness, deltas, anchors, image_size, pre_nms_top_k=1000, max_proposals=1000,
                              nms_iou=0.7, min_size=0.0)
    expected = arrays["stage/proposals/boxes"]
    count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
    mmdet_fixture.assert_same_set(proposals.boxes[0, :count], proposals.scores[0, :count], expected,
                                  arrays["stage/proposals/scores"])

    rois = tf.constant(expected[None])  # the reference's proposals from here on
    pooled = MultiLevelRoIAlign(7, 2, 5, sampling_ratio=0)([pyramid[lvl] for lvl in (2, 3, 4, 5)], rois)
    errors = {"roi feats": mmdet_fixture.relative_error(arrays, "stage/roi/s1/feats", pooled[0].numpy())}
    head = box_head_of(weights, pooled.shape)
    cls_logits, box_deltas = head(pooled)
    errors["cls_score"] = mmdet_fixture.relative_error(arrays, "stage/roi/s1/cls_score", cls_logits[0].numpy())
    errors["bbox_pred"] = mmdet_fixture.relative_error(arrays, "stage/roi/s1/bbox_pred", box_deltas[0].numpy())
    assert max(errors.values()) < TOLERANCE, errors

    rcnn = meta["test_cfg"]["rcnn"]
    dets = bbox_detections(cls_logits, box_deltas, rois, tf.ones(rois.shape[:2], tf.bool), image_size, 80,
                           stds=(0.1, 0.1, 0.2, 0.2), score_threshold=rcnn["score_thr"],
                           nms_iou=rcnn["nms"]["iou_threshold"], max_detections=rcnn["max_per_img"])
    count = int(dets.num_valid[0])
    mmdet_fixture.assert_same_set(dets.boxes[0, :count], dets.scores[0, :count], arrays["stage/det/boxes"],
                                  arrays["stage/det/scores"])
    np.testing.assert_array_equal(dets.classes[0, :count], arrays["stage/det/labels"])
