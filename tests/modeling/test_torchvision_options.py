"""The model options torchvision's detectors need (tools/zoo_reference/torchvision_conventions.md),
each a config field whose default keeps tfdet's behaviour: each test shows what the option changes and
that the default is the behaviour without it."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.conv_norm import make_norm
from tfdet.modeling.dense_heads import RPNSpec
from tfdet.modeling.dense_heads.rpn import rpn_proposals
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.detectors.base import MODEL_DEFAULTS
from tfdet.modeling.roi_heads.bbox_head import bbox_detections
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.modeling.roi_heads.standard import MASK_DEFAULTS, ROI_DEFAULTS
from tfdet.ops import postprocess
from tfdet.ops.anchors import AnchorGenerator


def test_norm_epsilon():
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 3, 4)), tf.float32)
    stats = [np.full(4, v, np.float32) for v in (1.5, 0.2, 0.1, 1e-4)]  # gamma, beta, mean, var (tiny)

    def run(spec):
        layer = make_norm(spec, "bn")
        layer.build(x.shape)
        for var, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), stats):
            var.assign(value)
        return layer(x).numpy(), layer.epsilon

    gamma, beta, mean, var = stats
    default, eps = run("frozen_bn")
    assert eps == 1e-5
    np.testing.assert_allclose(default, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5)
    zero, eps = run({"type": "frozen_bn", "epsilon": 0.0})
    assert eps == 0.0
    np.testing.assert_allclose(zero, (x - mean) / np.sqrt(var) * gamma + beta, rtol=1e-5)
    assert np.abs(zero - default).max() > 1e-2  # variance 1e-4: epsilon matters
    assert make_norm({"type": "bn", "epsilon": 1e-3}, "b").epsilon == pytest.approx(1e-3)
    assert make_norm({"type": "gn", "epsilon": 1e-3}, "g").epsilon == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="does not take options"):
        make_norm({"type": "frozen_bn", "eps": 0.0}, "bn")


FEATURES_224 = [(56, 56), (28, 28), (14, 14), (7, 7), (4, 4)]  # P2-P6 of a 224 x 224 input


def test_rpn_anchor_options():
    default = RPNSpec({})
    today = AnchorGenerator([4, 8, 16, 32, 64], scales=(8.0,), ratios=(0.5, 1.0, 2.0))
    for got, want in zip(default.anchors(FEATURES_224), today(FEATURES_224)):
        np.testing.assert_array_equal(got, want)
    sizes = ((32,), (64,), (128,), (256,), (512,))
    spec = RPNSpec(dict(anchor_sizes=sizes, anchor_round=True, anchor_strides_from_image=True))
    tv = AnchorGenerator([4, 8, 16, 32, 64], sizes=sizes, round_base=True, strides_from_image=True)
    got = spec.anchors(FEATURES_224)
    for g, w in zip(got, tv(FEATURES_224, image_size=(224, 224))):
        np.testing.assert_array_equal(g, w)
    # P6: stride 224 // 4 = 56, not 64; base anchors rounded (size 32 at ratio 0.5: corners -+22.63 -> -+23)
    np.testing.assert_array_equal(got[4][3 * 1, :2] - got[4][0, :2], [56, 0])
    np.testing.assert_array_equal(got[0][0], [-23.0, -11.0, 23.0, 11.0])
    assert not np.array_equal(got[0], default.anchors(FEATURES_224)[0])


def _rpn_inputs():
    """One level, 3 anchors: anchor 0 decodes to a 1e-3-wide box, anchor 1 has dw = -8 (torchvision keeps
    exp(-8) x the width, mmdetection clamps at -log(1000 / 16)), anchor 2 a plain box."""
    anchors = tf.constant([[10.0, 10.0, 10.001, 20.0], [10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]])
    objectness = [tf.constant([[[[3.0, 2.0, 1.0]]]])]
    deltas = [tf.constant([[[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -8.0, 0.0, 0.0, 0.0, 0.0, 0.0]]]])]
    return objectness, deltas, [anchors], tf.constant([[100.0, 100.0]])


def test_rpn_min_size_rule_and_clip_below():
    objectness, deltas, anchors, sizes = _rpn_inputs()
    strict = rpn_proposals(objectness, deltas, anchors, sizes, min_size=1e-3 * 0.999, max_proposals=3)
    inclusive = rpn_proposals(objectness, deltas, anchors, sizes, min_size=1e-3 * 0.999, max_proposals=3,
                              min_size_inclusive=True)
    both = rpn_proposals(objectness, deltas, anchors, sizes, max_proposals=3)
    above = rpn_proposals(objectness, deltas, anchors, sizes, max_proposals=3, clip_below=False)
    width = lambda p: (p.boxes[0, :, 2] - p.boxes[0, :, 0]).numpy()  # noqa: E731
    assert int(tf.reduce_sum(tf.cast(strict.valid, tf.int32))) == 3  # 1e-3 > 0.999e-3 either way
    exact = rpn_proposals(objectness, deltas, anchors, sizes, min_size=float(width(both)[0]), max_proposals=3)
    exact_in = rpn_proposals(objectness, deltas, anchors, sizes, min_size=float(width(both)[0]), max_proposals=3,
                             min_size_inclusive=True)
    assert int(tf.reduce_sum(tf.cast(exact.valid, tf.int32))) == 2  # > min_size drops the box of that width
    assert int(tf.reduce_sum(tf.cast(exact_in.valid, tf.int32))) == 3  # >= keeps it
    np.testing.assert_allclose(width(both)[1], 20 * 16 / 1000, rtol=1e-5)  # clamped at -log(1000 / 16)
    np.testing.assert_allclose(width(above)[1], 20 * np.exp(-8), rtol=1e-3)
    np.testing.assert_array_equal(strict.boxes, inclusive.boxes)
    # the spec's defaults are today's rule
    assert RPNSpec.DEFAULTS["min_size_inclusive"] is False and RPNSpec.DEFAULTS["box_coder_clip_below"] is True
    spec = RPNSpec(dict(levels=(2,), pre_nms_top_k_test=3, max_proposals_test=3))
    spec.anchors = lambda _: anchors
    np.testing.assert_array_equal(spec.proposals((objectness, deltas), sizes).boxes, both.boxes)
    spec = RPNSpec(dict(levels=(2,), pre_nms_top_k_test=3, max_proposals_test=3, box_coder_clip_below=False))
    spec.anchors = lambda _: anchors
    np.testing.assert_array_equal(spec.proposals((objectness, deltas), sizes).boxes, above.boxes)


def test_roi_min_box_size_and_clip_below():
    rois = tf.constant([[[10.0, 10.0, 10.005, 30.0], [40.0, 40.0, 60.0, 60.0]]])
    logits = tf.constant([[[4.0, 0.0], [4.0, 0.0]]])  # one class + background
    deltas = tf.constant([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -40.0, 0.0]]])  # dw = -40 x 0.2 (stds) = -8
    common = dict(rois=rois, roi_valid=tf.ones([1, 2], tf.bool), image_sizes=tf.constant([[100.0, 100.0]]),
                  num_classes=1)
    default = bbox_detections(logits, deltas, **common)
    assert int(default.num_valid[0]) == 2
    dropped = bbox_detections(logits, deltas, **common, min_box_size=1e-2)
    assert int(dropped.num_valid[0]) == 1  # the 5e-3-wide box
    np.testing.assert_allclose(dropped.boxes[0, 0, 0], 40 + 10 - 10 * 16 / 1000, rtol=1e-6)
    above = bbox_detections(logits, deltas, **common, clip_below=False)
    box = above.boxes[0, int(np.argmax(above.boxes[0, :2, 0]))].numpy()
    np.testing.assert_allclose(box[2] - box[0], 20 * np.exp(-8), rtol=1e-3)
    assert ROI_DEFAULTS["min_box_size"] == 0.0 and ROI_DEFAULTS["box_coder_clip_below"] is True


def test_mask_paste_rule():
    masks = tf.constant(np.random.default_rng(1).uniform(size=(1, 2, 28, 28)), tf.float32)
    boxes = tf.constant([[[3.3, 4.7, 20.2, 17.9], [0.0, 0.0, 31.0, 9.5]]])
    assert MASK_DEFAULTS["paste"] == "detectron2"
    np.testing.assert_array_equal(paste_masks(masks, boxes, (24, 32)),
                                  paste_masks(masks, boxes, (24, 32), rule="detectron2"))
    tv = paste_masks(masks, boxes, (24, 32), rule="torchvision")
    np.testing.assert_array_equal(tv, postprocess.paste_masks_torchvision(masks, boxes, (24, 32)))
    assert not np.array_equal(tv, paste_masks(masks, boxes, (24, 32)))
    with pytest.raises(ValueError, match="model.mask.paste"):
        paste_masks(masks, boxes, (24, 32), rule="mmdet")


def test_zero_padding_after_normalize():
    assert MODEL_DEFAULTS["zero_padding_after_normalize"] is False
    config = importlib.import_module("configs.faster_rcnn").get_config("tiny").model
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
    sizes = tf.constant([[48.0, 40.0], [64.0, 64.0]])
    other = images.copy()
    other[0, 48:] = 0.0
    other[0, :, 40:] = 17.0  # only the padding differs
    model = build_detector(config)
    mean, std = model.pixel_mean, model.pixel_std
    default = model.features(images, image_sizes=sizes)
    want = {int(k): v for k, v in model.neck(model.backbone((images - mean) / std)).items()}
    for level in default:
        np.testing.assert_allclose(default[level], want[level], rtol=1e-5, atol=1e-5)  # today's formula
    config.zero_padding_after_normalize = True
    zeroed = build_detector(config)
    zeroed.set_weights(model.get_weights())
    a, b = zeroed.features(images, image_sizes=sizes), zeroed.features(other, image_sizes=sizes)
    for level in a:
        np.testing.assert_allclose(a[level], b[level], rtol=1e-5, atol=1e-5)
    normalized = ((images - mean) / std).numpy()
    normalized[0, 48:] = 0.0
    normalized[0, :, 40:] = 0.0
    want = {int(k): v for k, v in zeroed.neck(zeroed.backbone(normalized)).items()}
    for level in a:
        np.testing.assert_allclose(a[level], want[level], rtol=1e-5, atol=1e-5)
    assert not np.allclose(default[2], a[2], atol=1e-3)
    with pytest.raises(ValueError, match="valid sizes"):
        zeroed.features(images)


def test_keypoint_decode_rule():
    from tfdet.modeling.roi_heads.keypoint_head import decode_keypoints, heatmaps_to_keypoints
    from tfdet.modeling.roi_heads.standard import KEYPOINT_DEFAULTS

    heatmaps = tf.constant(np.random.default_rng(3).normal(size=(1, 2, 56, 56, 3)), tf.float32)
    boxes = tf.constant([[[3.3, 4.7, 40.2, 57.9], [10.0, 0.0, 12.5, 90.0]]])
    assert KEYPOINT_DEFAULTS["decode"] == "cell_center"
    np.testing.assert_array_equal(decode_keypoints(heatmaps, boxes), heatmaps_to_keypoints(heatmaps, boxes))
    tv = decode_keypoints(heatmaps, boxes, "torchvision")
    np.testing.assert_array_equal(tv, postprocess.heatmaps_to_keypoints_torchvision(heatmaps, boxes))
    assert not np.allclose(tv, heatmaps_to_keypoints(heatmaps, boxes))
    with pytest.raises(ValueError, match="model.keypoint.decode"):
        decode_keypoints(heatmaps, boxes, "detectron2")


def test_rpn_num_convs():
    from tfdet.modeling.dense_heads.rpn import RPNHead

    maps = [tf.constant(np.random.default_rng(4).normal(size=(1, 6, 5, 8)), tf.float32)]
    one = RPNSpec(dict(feat_channels=8)).make_head()
    one(maps)
    assert RPNSpec.DEFAULTS["num_convs"] == 1
    assert sorted(w.path for w in one.weights) == sorted(
        f"rpn_head/{n}/{leaf}" for n in ("rpn_conv", "rpn_cls", "rpn_reg") for leaf in ("kernel", "bias"))
    two = RPNSpec(dict(feat_channels=8, num_convs=2)).make_head()
    objectness, _ = two(maps)
    assert "rpn_head/rpn_conv2/kernel" in [w.path for w in two.weights]
    x = tf.nn.relu(tf.nn.conv2d(maps[0], two.conv.kernel, 1, "SAME") + two.conv.bias)
    x = tf.nn.relu(tf.nn.conv2d(x, two.more_convs[0].kernel, 1, "SAME") + two.more_convs[0].bias)
    np.testing.assert_allclose(objectness[0], tf.nn.conv2d(x, two.cls.kernel, 1, "SAME") + two.cls.bias,
                               rtol=1e-5, atol=1e-6)
    assert RPNHead.from_config(two.get_config()).num_convs == 2
    with pytest.raises(ValueError, match="num_convs"):
        RPNHead(num_convs=0)


def test_retina_topk_mode_and_anchor_options():
    from tfdet.modeling.dense_heads import RetinaSpec
    from tfdet.modeling.dense_heads.retina_head import retina_detections

    probs = np.array([[0.9, 0.8], [0.85, 0.1], [0.1, 0.1]], np.float32)  # 3 anchors x 2 classes
    logits = [tf.constant(np.log(probs / (1 - probs)).reshape(1, 1, 1, 6))]
    deltas = [tf.zeros([1, 1, 1, 12])]
    anchors = [tf.constant([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 50.0, 50.0]])]
    common = dict(image_sizes=tf.constant([[64.0, 64.0]]), num_classes=2, pre_nms_top_k=2, max_detections=10)
    by_anchor = retina_detections(logits, deltas, anchors, **common)  # anchors 0, 1 with all their classes
    by_pair = retina_detections(logits, deltas, anchors, **common, topk_mode="anchor_class")  # the 2 best pairs
    assert int(by_anchor.num_valid[0]) == 4 and int(by_pair.num_valid[0]) == 2
    np.testing.assert_allclose(by_pair.scores[0, :2], [0.9, 0.85], rtol=1e-6)
    np.testing.assert_array_equal(by_pair.classes[0, :3], [0, 0, -1])
    np.testing.assert_array_equal(by_pair.boxes[0, :2], [[0, 0, 10, 10], [20, 20, 30, 30]])
    with pytest.raises(ValueError, match="model.retina.topk_mode"):
        retina_detections(logits, deltas, anchors, **common, topk_mode="class")
    defaults = RetinaSpec.DEFAULTS
    assert (defaults["topk_mode"], defaults["anchor_sizes"], defaults["anchor_round"],
            defaults["anchor_strides_from_image"], defaults["box_coder_clip_below"]) == ("anchor", None, False, False,
                                                                                       True)
    features = [(28, 28), (14, 14), (7, 7), (4, 4), (2, 2)]  # P3-P7 of a 224 x 224 input
    today = AnchorGenerator([8, 16, 32, 64, 128], octave_base_scale=4, scales_per_octave=3)
    for got, want in zip(RetinaSpec({}, 3).anchors(features), today(features)):
        np.testing.assert_array_equal(got, want)
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
    spec = RetinaSpec(dict(anchor_sizes=sizes, anchor_round=True, anchor_strides_from_image=True), 3)
    tv = AnchorGenerator([8, 16, 32, 64, 128], sizes=sizes, round_base=True, strides_from_image=True)
    for got, want in zip(spec.anchors(features), tv(features, image_size=(224, 224))):
        np.testing.assert_array_equal(got, want)
