"""RetinaNet head: shapes, prior-probability bias, serialization; losses and inference vs NumPy."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.modeling.test_roi_heads import roundtrip
from tests.ops.test_box_ops import np_decode, np_encode
from tests.ops.test_nms import np_multiclass

from tfdet.modeling.dense_heads.retina_head import (RETINA_MATCHER, RetinaHead, RetinaSpec, retina_detections,
                                                   retina_losses)
from tfdet.ops.anchors import AnchorGenerator

GEN = AnchorGenerator(strides=[8, 16], ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=3)
SIZES = [(8, 8), (4, 4)]


def test_head_shapes_prior_and_serialization(tmp_path):
    head = RetinaHead(num_classes=3, num_anchors=9, feat_channels=8, num_convs=2)
    feats = [tf.random.normal([2, h, w, 6]) for h, w in SIZES]
    cls_out, reg_out = head(feats)
    assert [c.shape for c in cls_out] == [(2, 8, 8, 27), (2, 4, 4, 27)]
    assert [r.shape for r in reg_out] == [(2, 8, 8, 36), (2, 4, 4, 36)]
    np.testing.assert_allclose(1 / (1 + np.exp(-head.cls.bias.numpy())), 0.01, rtol=1e-5)
    assert len(head.cls_convs) == len(head.reg_convs) == 2
    x = tf.random.normal([2, 8, 8, 6])
    single = RetinaHead(num_classes=3, feat_channels=8, num_convs=2)
    roundtrip(_ListWrapper(single), x, tmp_path)


def test_head_norm_tower_and_serialization(tmp_path):
    """norm (torchvision retinanet_resnet50_fpn_v2: GroupNorm(32)): each tower conv loses its bias and is
    followed by the norm, then ReLU; the default (None) keeps conv + bias + ReLU and no norm layers."""
    x = tf.random.stateless_normal([2, 6, 5, 8], seed=(3, 4))
    plain = RetinaHead(num_classes=3, feat_channels=8, num_convs=2)
    plain([x])
    assert plain.norm is None and not [w for w in plain.weights if "_norm" in w.path]
    head = RetinaHead(num_classes=3, feat_channels=8, num_convs=2, norm={"type": "gn", "num_groups": 4})
    cls_out, reg_out = head([x])
    paths = sorted(w.path.split("/", 1)[1] for w in head.weights)
    assert "cls_conv0/bias" not in paths and "reg_conv1_norm/gamma" in paths and "retina_cls/bias" in paths
    rng = np.random.default_rng(5)
    for w in head.weights:  # GroupNorm's affine parameters away from 1 / 0
        w.assign(rng.normal(1.0 if w.path.endswith("gamma") else 0.0, 0.3, w.shape).astype(np.float32))

    def group_norm(y, norm, groups=4, eps=1e-5):
        b, h, w, c = y.shape
        g = y.reshape(b, h, w, groups, c // groups)
        g = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + eps)
        return g.reshape(b, h, w, c) * norm.gamma.numpy() + norm.beta.numpy()

    def tower(convs, norms):
        y = x.numpy()
        for conv, norm in zip(convs, norms):
            y = np.maximum(group_norm(tf.nn.conv2d(y, conv.kernel, 1, "SAME").numpy(), norm), 0)
        return y

    cls_out, reg_out = head([x])
    want_cls = tf.nn.conv2d(tower(head.cls_convs, head.cls_norms), head.cls.kernel, 1, "SAME") + head.cls.bias
    want_reg = tf.nn.conv2d(tower(head.reg_convs, head.reg_norms), head.reg.kernel, 1, "SAME") + head.reg.bias
    np.testing.assert_allclose(cls_out[0], want_cls, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reg_out[0], want_reg, rtol=1e-4, atol=1e-4)
    assert RetinaHead.from_config(head.get_config()).norm == {"type": "gn", "num_groups": 4}
    roundtrip(_ListWrapper(RetinaHead(num_classes=3, feat_channels=8, num_convs=2, norm=head.norm)),
              tf.random.normal([2, 8, 8, 6]), tmp_path)
    assert RetinaSpec.DEFAULTS["norm"] is None and RetinaSpec({}, 3).make_head().norm is None
    assert RetinaSpec(dict(norm="gn"), 3).make_head().norm == {"type": "gn"}
    with pytest.raises(ValueError, match="norm must be None or one of"):
        RetinaHead(num_classes=3, norm="layer_norm")


@keras.saving.register_keras_serializable(package="tests")
class _ListWrapper(keras.layers.Layer):
    """Calls a list-taking head on one map (so the generic round-trip helper applies)."""

    def __init__(self, head, **kwargs):
        super().__init__(**kwargs)
        self.head = head

    def call(self, x):
        cls_out, reg_out = self.head([x])
        return cls_out[0], reg_out[0]

    def get_config(self):
        return {**super().get_config(), "head": keras.saving.serialize_keras_object(self.head)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("head")), **config)


def test_losses_match_numpy():
    rng = np.random.default_rng(60)
    anchors = tf.concat(GEN(SIZES), 0)
    n, c = anchors.shape[0], 3
    logits = rng.normal(-2, 1, (2, n, c)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, n, 4)).astype(np.float32)
    gt_boxes = np.array([[[8, 8, 40, 36], [30, 20, 62, 60]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    gt_classes = np.array([[1, 2], [-1, -1]], np.int32)
    got = retina_losses(logits, deltas, anchors, gt_boxes, gt_classes, c)
    match = RETINA_MATCHER(anchors, gt_boxes, gt_classes)
    labels, matched = match.labels.numpy(), match.matched_gt.numpy()
    pos = labels == 1
    assert pos[0].sum() > 0 and pos[1].sum() == 0 and (labels == -1).any()
    t = np.zeros((2, n, c))
    b_idx, n_idx = np.nonzero(pos)
    t[b_idx, n_idx, gt_classes[b_idx, matched[b_idx, n_idx]]] = 1
    x = logits.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    pt = (1 - p) * t + p * (1 - t)
    focal = (0.25 * t + 0.75 * (1 - t)) * pt ** 2 * -(t * np.log(p) + (1 - t) * np.log(1 - p))
    num_pos = pos.sum()
    want_cls = (focal * (labels >= 0)[..., None]).sum() / num_pos
    a = anchors.numpy().astype(np.float64)
    targets = np_encode(gt_boxes[b_idx, matched[b_idx, n_idx]].astype(np.float64), a[n_idx], (0,) * 4, (1,) * 4)
    want_box = np.abs(deltas[b_idx, n_idx] - targets).sum() / num_pos
    np.testing.assert_allclose(got["retina_cls"], want_cls, rtol=1e-4)
    np.testing.assert_allclose(got["retina_box"], want_box, rtol=1e-4)
    # No object anywhere: the box loss is 0 and the focal loss is divided by 1.
    empty = retina_losses(logits, deltas, anchors, np.zeros((2, 1, 4), np.float32), -np.ones((2, 1), np.int32), c)
    assert float(empty["retina_box"]) == 0.0
    np.testing.assert_allclose(empty["retina_cls"], (0.75 * p ** 2 * -np.log(1 - p)).sum(), rtol=1e-4)


def test_detections_match_numpy_pipeline():
    rng = np.random.default_rng(61)
    c, top_k = 3, 50
    anchors = [a.numpy() for a in GEN(SIZES)]
    cls_out = [rng.normal(-3, 1.5, (2, h, w, 9 * c)).astype(np.float32) for h, w in SIZES]
    reg_out = [rng.normal(0, 0.3, (2, h, w, 36)).astype(np.float32) for h, w in SIZES]
    sizes = np.array([[64, 64], [50, 60]], np.float32)
    got = retina_detections(cls_out, reg_out, anchors, sizes, c, pre_nms_top_k=top_k, max_detections=15)
    for b in range(2):
        boxes, scores = [], []
        for logits, deltas, a in zip(cls_out, reg_out, anchors):
            probs = 1 / (1 + np.exp(-logits[b].reshape(-1, c).astype(np.float64)))
            top = np.argsort(-probs.max(1), kind="stable")[:top_k]
            d = np_decode(deltas[b].reshape(-1, 4)[top].astype(np.float64), a[top].astype(np.float64), (0,) * 4,
                          (1,) * 4, math.log(1000 / 16))
            h, w = sizes[b]
            boxes.append(np.stack([d[:, 0].clip(0, w), d[:, 1].clip(0, h), d[:, 2].clip(0, w), d[:, 3].clip(0, h)], 1))
            scores.append(probs[top])
        want = np_multiclass(np.concatenate(boxes), np.concatenate(scores), 15, 0.5, 0.05, "hard")
        k = len(want)
        assert int(got.num_valid[b]) == k and k > 0
        np.testing.assert_allclose(got.scores[b, :k], [d[0] for d in want], rtol=1e-4)
        np.testing.assert_array_equal(got.classes[b, :k], [d[1] for d in want])
        np.testing.assert_allclose(got.boxes[b, :k], [d[2] for d in want], rtol=1e-4, atol=1e-3)


def test_per_image_anchors_masks_and_smooth_l1():
    """The GA-RetinaNet generalizations: [B, N, 4] anchors equal shared ones; masked anchors never detect;
    beta > 0 is smooth L1 (against a NumPy reference), stds scale the targets."""
    rng = np.random.default_rng(62)
    c = 3
    anchors = GEN(SIZES)
    cls_out = [rng.normal(-2, 1.5, (2, h, w, 9 * c)).astype(np.float32) for h, w in SIZES]
    reg_out = [rng.normal(0, 0.3, (2, h, w, 36)).astype(np.float32) for h, w in SIZES]
    sizes = np.array([[64, 64], [50, 60]], np.float32)
    batched = [tf.broadcast_to(a[None], [2, *a.shape]) for a in anchors]
    shared = retina_detections(cls_out, reg_out, anchors, sizes, c, max_detections=15)
    all_kept = [tf.ones(a.shape[:2], tf.bool) for a in batched]
    per_image = retina_detections(cls_out, reg_out, batched, sizes, c, max_detections=15, masks=all_kept)
    for a, b in zip(shared, per_image):
        np.testing.assert_array_equal(a, b)
    # only the first level's anchors kept: every detection comes from that level's boxes
    masks = [tf.ones(batched[0].shape[:2], tf.bool), tf.zeros(batched[1].shape[:2], tf.bool)]
    level0 = retina_detections(cls_out[:1], reg_out[:1], anchors[:1], sizes, c, max_detections=15)
    masked = retina_detections(cls_out, reg_out, batched, sizes, c, max_detections=15, masks=masks)
    assert level0.num_valid.numpy().min() > 0 and not np.array_equal(shared.boxes, masked.boxes)
    for a, b in zip(level0, masked):
        np.testing.assert_array_equal(a, b)
    flat = tf.concat(anchors, 0)
    logits = rng.normal(-2, 1, (2, flat.shape[0], c)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, flat.shape[0], 4)).astype(np.float32)
    gt_boxes = np.array([[[8, 8, 40, 36], [30, 20, 62, 60]], [[4, 4, 30, 30], [0, 0, 0, 0]]], np.float32)
    gt_classes = np.array([[1, 2], [0, -1]], np.int32)
    stds = (0.5, 0.5, 1.0, 1.0)
    one = retina_losses(logits, deltas, flat, gt_boxes, gt_classes, c, beta=0.04, stds=stds)
    two = retina_losses(logits, deltas, tf.broadcast_to(flat[None], [2, *flat.shape]), gt_boxes, gt_classes, c,
                        beta=0.04, stds=stds)
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-6)
    match = RETINA_MATCHER(flat, gt_boxes, gt_classes)
    pos = match.labels.numpy() == 1
    b_idx, n_idx = np.nonzero(pos)
    targets = np_encode(gt_boxes[b_idx, match.matched_gt.numpy()[b_idx, n_idx]].astype(np.float64),
                        flat.numpy()[n_idx].astype(np.float64), (0,) * 4, stds)
    diff = np.abs(deltas[b_idx, n_idx] - targets)
    want = np.where(diff < 0.04, 0.5 * diff ** 2 / 0.04, diff - 0.02).sum() / pos.sum()
    np.testing.assert_allclose(one["retina_box"], want, rtol=1e-4)
