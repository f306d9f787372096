"""model.rpn / model.retina / model.roi box_convention: "legacy_v1" switches the anchors and the box coders to
mmdetection 1.x's (tfdet.ops.legacy, tested against mmdetection in tests/zoo/test_mmdet_ops.py); the default
"current" is the behaviour without the field."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.dense_heads import RetinaSpec, RPNSpec
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.roi_heads.bbox_head import bbox_detections, sample_rois
from tfdet.modeling.roi_heads.standard import ROI_DEFAULTS
from tfdet.ops import box_ops
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.legacy import LegacyAnchorGenerator, legacy_decode_boxes, legacy_encode_boxes

SIZES = [(5, 6), (3, 3)]
SIZE = tf.constant([[40.0, 48.0]])


def test_defaults_are_current():
    assert RPNSpec.DEFAULTS["box_convention"] == RetinaSpec.DEFAULTS["box_convention"] == "current"
    assert ROI_DEFAULTS["box_convention"] == "current"


def _rpn_outputs(seed=0):
    rng = np.random.default_rng(seed)
    objectness = [tf.constant(rng.normal(size=(1, h, w, 3)), tf.float32) for h, w in SIZES]
    deltas = [tf.constant(rng.normal(scale=0.3, size=(1, h, w, 12)), tf.float32) for h, w in SIZES]
    return objectness, deltas


def test_rpn_legacy_anchors_and_decoding():
    block = dict(levels=(3, 4), pre_nms_top_k_test=1000, max_proposals_test=1000, nms_iou=1.0)
    current, legacy = RPNSpec(block), RPNSpec(dict(block, box_convention="legacy_v1"))
    for got, want in zip(current.anchors(SIZES), AnchorGenerator([8, 16], scales=(8,))(SIZES)):
        np.testing.assert_array_equal(got, want)
    want_anchors = LegacyAnchorGenerator([8, 16], scales=(8,), center_offset=0.5)(SIZES)
    for got, want in zip(legacy.anchors(SIZES), want_anchors):
        np.testing.assert_array_equal(got, want)
    outputs = _rpn_outputs()
    anchors = tf.concat(want_anchors, 0)
    deltas = tf.concat([tf.reshape(d, [-1, 4]) for d in outputs[1]], 0)
    expected = legacy_decode_boxes(deltas, anchors, max_shape=SIZE[0]).numpy()
    proposals = legacy.proposals(outputs, SIZE)
    count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
    assert count >= 0.9 * len(expected)  # NMS at IoU 1 drops only identical boxes (clipped to the image)
    assert _distances(proposals.boxes[0, :count], expected).max() < 1e-4  # each a legacy-decoded anchor
    plain = current.proposals(outputs, SIZE)
    assert _distances(plain.boxes[0, :count], expected).max() > 0.5


def _distances(boxes, candidates):
    """Per box, the largest coordinate difference to its nearest candidate row."""
    return np.abs(np.asarray(boxes)[:, None] - np.asarray(candidates)[None]).max(-1).min(-1)


def test_retina_legacy_anchors_and_decoding():
    current, legacy = RetinaSpec(dict(levels=(3, 4)), 2), RetinaSpec(dict(levels=(3, 4), box_convention="legacy_v1"), 2)
    want = LegacyAnchorGenerator([8, 16], octave_base_scale=4, scales_per_octave=3, center_offset=0.5)(SIZES)
    for got, ref in zip(legacy.anchors(SIZES), want):
        np.testing.assert_array_equal(got, ref)
    for got, ref in zip(current.anchors(SIZES), AnchorGenerator([8, 16], octave_base_scale=4,
                                                                scales_per_octave=3)(SIZES)):
        np.testing.assert_array_equal(got, ref)
    rng = np.random.default_rng(1)
    cls = [tf.constant(rng.normal(size=(1, h, w, 18)), tf.float32) for h, w in SIZES]
    reg = [tf.constant(rng.normal(scale=0.3, size=(1, h, w, 36)), tf.float32) for h, w in SIZES]
    det = legacy.detections((cls, reg), SIZE)
    count = int(det.num_valid[0])
    assert count > 0
    anchors = tf.concat(want, 0)
    decoded = legacy_decode_boxes(tf.concat([tf.reshape(r, [-1, 4]) for r in reg], 0), anchors, max_shape=SIZE[0])
    assert _distances(det.boxes[0, :count], decoded).max() < 1e-4  # each detection a legacy-decoded anchor
    plain = current.detections((cls, reg), SIZE)
    assert _distances(plain.boxes[0, :int(plain.num_valid[0])], decoded).max() > 0.5


def test_roi_legacy_decoding_and_targets():
    rois = tf.constant([[[10.0, 12.0, 30.0, 25.0], [5.0, 5.0, 40.0, 38.0]]])
    logits = tf.constant([[[3.0, 0.0], [2.0, 0.0]]])
    deltas = tf.constant([[[0.5, -0.2, 0.3, 0.1], [-0.4, 0.3, -0.2, 0.2]]])
    common = dict(rois=rois, roi_valid=tf.ones([1, 2], tf.bool), image_sizes=SIZE, num_classes=1, nms_iou=1.0)
    legacy = bbox_detections(logits, deltas, **common, convention="legacy_v1")
    stds = ROI_DEFAULTS["bbox_stds"]
    want = legacy_decode_boxes(deltas[0], rois[0], stds=stds, max_shape=SIZE[0]).numpy()
    np.testing.assert_allclose(np.sort(legacy.boxes[0, :2].numpy(), 0), np.sort(want, 0), atol=1e-5)
    current = bbox_detections(logits, deltas, **common)
    np.testing.assert_allclose(np.sort(current.boxes[0, :2].numpy(), 0),
                               np.sort(box_ops.decode_boxes(deltas[0], rois[0], stds=stds,
                                                            max_shape=SIZE[0]).numpy(), 0), atol=1e-5)
    gt = tf.constant([[[11.0, 12.0, 29.0, 27.0]]])
    args = (rois, tf.ones([1, 2], tf.bool), gt, tf.constant([[0]]), 1)
    targets = sample_rois(*args, add_gt=False, seed=tf.constant([1, 2]), convention="legacy_v1")
    positive = targets.is_positive[0].numpy()
    assert positive.any()
    np.testing.assert_allclose(targets.box_targets[0].numpy()[positive],
                               legacy_encode_boxes(tf.repeat(gt[0], int(positive.sum()), 0),
                                                   targets.rois[0].numpy()[positive], stds=stds).numpy(), rtol=1e-5)
    plain = sample_rois(*args, add_gt=False, seed=tf.constant([1, 2]))
    assert not np.allclose(plain.box_targets[0].numpy()[positive], targets.box_targets[0].numpy()[positive])


def test_bad_convention_and_combinations_are_refused():
    with pytest.raises(ValueError, match="model.rpn.box_convention"):
        RPNSpec(dict(box_convention="v1"))
    with pytest.raises(ValueError, match="model.retina.box_convention"):
        RetinaSpec(dict(box_convention="legacy"), 2)
    with pytest.raises(ValueError, match="box_coder_clip_below"):
        RPNSpec(dict(box_convention="legacy_v1", box_coder_clip_below=False))
    with pytest.raises(ValueError, match="anchor_sizes"):
        RetinaSpec(dict(box_convention="legacy_v1", anchor_round=True), 2)


def test_detector_config_round_trip_and_cascade_refusal():
    config = importlib.import_module("configs.faster_rcnn").get_config("tiny").model
    config.rpn.box_convention = "legacy_v1"
    config.roi.box_convention = "legacy_v1"
    model = build_detector(config)
    assert isinstance(model.rpn.anchor_generator, LegacyAnchorGenerator)
    clone = type(model).from_config(model.get_config())
    assert clone.model_config.rpn.box_convention == clone.model_config.roi.box_convention == "legacy_v1"
    assert isinstance(clone.rpn.anchor_generator, LegacyAnchorGenerator)
    assert not isinstance(build_detector(importlib.import_module("configs.faster_rcnn").get_config("tiny").model)
                          .rpn.anchor_generator, LegacyAnchorGenerator)
    cascade = importlib.import_module("configs.cascade_rcnn").get_config("tiny").model
    cascade.roi.box_convention = "legacy_v1"
    with pytest.raises(ValueError, match="cascade"):
        build_detector(cascade)
