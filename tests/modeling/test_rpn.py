"""RPN head: serialization, losses, proposals vs a NumPy pipeline, a real training run on tiny images."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.ops.test_box_ops import np_decode
from tests.ops.test_nms import np_nms

from tfdet.modeling.dense_heads.rpn import RPNHead, flatten_levels, rpn_losses, rpn_proposals
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.matching import MaxIoUMatcher
from tfdet.ops.sampling import sample
from tests.keras_io import assert_round_trip

GEN = AnchorGenerator(strides=[4, 8], scales=[4], ratios=[0.5, 1.0, 2.0])
SIZES = [(16, 16), (8, 8)]


def features(rng, batch=2, channels=8):
    return [tf.constant(rng.normal(size=(batch, h, w, channels)), tf.float32) for h, w in SIZES]


def test_head_shapes_and_serialization(tmp_path):
    head = RPNHead(num_anchors=3, feat_channels=16)
    inputs = [keras.Input((h, w, 8)) for h, w in SIZES]
    model = keras.Model(inputs, head(inputs))
    feats = features(np.random.default_rng(30))
    objectness, deltas = model(feats)
    assert [o.shape for o in objectness] == [(2, 16, 16, 3), (2, 8, 8, 3)]
    assert [d.shape for d in deltas] == [(2, 16, 16, 12), (2, 8, 8, 12)]
    clone = RPNHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert_round_trip(model, feats, tmp_path, rtol=1e-6, atol=0)
    # The conv is shared: identical maps on two levels give identical outputs.
    same = head([feats[0], feats[0]])
    np.testing.assert_array_equal(same[0][0], same[0][1])


def gt_batch():
    gt_boxes = np.array([[[8, 8, 30, 26], [36, 30, 60, 62], [0, 0, 0, 0]],
                         [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)  # image 1 has no objects
    gt_classes = np.array([[0, 3, -1], [-1, -1, -1]], np.int32)
    return gt_boxes, gt_classes


def test_losses_match_a_direct_computation():
    rng = np.random.default_rng(31)
    anchors = tf.concat(GEN(SIZES), 0)
    n = anchors.shape[0]
    objectness = rng.normal(size=(2, n)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, n, 4)).astype(np.float32)
    gt_boxes, gt_classes = gt_batch()
    seed = tf.constant([3, 4])
    got = rpn_losses(objectness, deltas, anchors, gt_boxes, gt_classes, num_samples=64, seed=seed)
    # The same matching and sampling, then the loss formulas in NumPy.
    match = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(anchors, gt_boxes, gt_classes)
    mask = sample(match.labels, 64, 0.5, seed=seed).mask.numpy()
    labels, matched = match.labels.numpy(), match.matched_gt.numpy()
    pos = mask & (labels == 1)
    assert pos[0].sum() > 0 and pos[1].sum() == 0 and mask[1].sum() == 64  # image 1: 64 negatives
    x, t = objectness.astype(np.float64), pos.astype(np.float64)
    bce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    want_cls = (bce * mask).sum() / mask.sum()
    a = anchors.numpy().astype(np.float64)
    b_idx, n_idx = np.nonzero(pos)
    g = gt_boxes[b_idx, matched[b_idx, n_idx]].astype(np.float64)
    p = a[n_idx]
    tx = ((g[:, 0] + g[:, 2]) - (p[:, 0] + p[:, 2])) / 2 / (p[:, 2] - p[:, 0])
    ty = ((g[:, 1] + g[:, 3]) - (p[:, 1] + p[:, 3])) / 2 / (p[:, 3] - p[:, 1])
    tw = np.log((g[:, 2] - g[:, 0]) / (p[:, 2] - p[:, 0]))
    th = np.log((g[:, 3] - g[:, 1]) / (p[:, 3] - p[:, 1]))
    want_box = np.abs(deltas[b_idx, n_idx] - np.stack([tx, ty, tw, th], 1)).sum() / mask.sum()
    np.testing.assert_allclose(got["rpn_cls"], want_cls, rtol=1e-5)
    np.testing.assert_allclose(got["rpn_box"], want_box, rtol=1e-5)


def np_proposals(objectness, deltas, anchors, image_sizes, pre, post, iou):
    out = []
    for b in range(objectness[0].shape[0]):
        dets = []
        for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
            s = o[b].reshape(-1)
            top = np.argsort(-s, kind="stable")[:pre]
            boxes = np_decode(d[b].reshape(-1, 4)[top].astype(np.float64), a[top].astype(np.float64),
                              (0, 0, 0, 0), (1, 1, 1, 1), np.log(1000 / 16))
            h, w = image_sizes[b]
            boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w),
                              boxes[:, 3].clip(0, h)], 1)
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, probs = boxes[ok], 1 / (1 + np.exp(-s[top][ok]))
            dets += [(probs[i], boxes[i]) for i in np_nms(boxes, probs, iou)]
        out.append(sorted(dets, key=lambda d: -d[0])[:post])
    return out


def test_proposals_match_numpy_pipeline():
    rng = np.random.default_rng(32)
    anchors = [a.numpy() for a in GEN(SIZES)]
    objectness = [rng.normal(size=(2, h, w, 3)).astype(np.float32) for h, w in SIZES]
    deltas = [rng.normal(0, 0.3, (2, h, w, 12)).astype(np.float32) for h, w in SIZES]
    image_sizes = np.array([[64, 64], [50, 40]], np.float32)
    got = rpn_proposals(objectness, deltas, anchors, image_sizes, pre_nms_top_k=100, max_proposals=60)
    want = np_proposals(objectness, deltas, anchors, image_sizes, 100, 60, 0.7)
    assert got.boxes.shape == (2, 60, 4)
    for b in range(2):
        n = len(want[b])
        assert got.valid.numpy()[b].sum() == n
        np.testing.assert_allclose(got.scores.numpy()[b, :n], [d[0] for d in want[b]], rtol=1e-5)
        np.testing.assert_allclose(got.boxes.numpy()[b, :n], [d[1] for d in want[b]], rtol=1e-4, atol=1e-3)
        boxes = got.boxes.numpy()[b, :n]
        h, w = image_sizes[b]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (got.boxes.numpy()[b, n:] == 0).all()


def test_training_reduces_the_loss_on_a_fixed_batch():
    rng = np.random.default_rng(33)
    gt_boxes, gt_classes = gt_batch()
    images = rng.uniform(0, 0.2, size=(2, 64, 64, 3)).astype(np.float32)
    for x1, y1, x2, y2 in gt_boxes[0, :2].astype(int):
        images[0, y1:y2, x1:x2] = 1.0  # bright objects on a dark, noisy background
    images = tf.constant(images)
    stem = [keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")]
    head = RPNHead(num_anchors=GEN.num_anchors, feat_channels=16)
    anchors = tf.concat(GEN(SIZES), 0)
    valid = tf.concat(GEN.valid_flags(SIZES, [[64, 64], [64, 64]]), 1)
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            c3 = stem[0](images)
            c4 = stem[1](c3)
            objectness, deltas = head([c3, c4])
            out = rpn_losses(flatten_levels(objectness, 1)[..., 0], flatten_levels(deltas, 4), anchors, gt_boxes,
                             gt_classes, anchor_valid=valid, num_samples=64, seed=seed)
            loss = out["rpn_cls"] + out["rpn_box"]
        variables = stem[0].trainable_variables + stem[1].trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    history = [float(step(tf.constant([i, 0]))) for i in range(40)]
    assert np.all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.6 * np.mean(history[:5]), history
    objectness, deltas = head([stem[0](images), stem[1](stem[0](images))])
    # The fitted RPN scores the anchors matching the objects above the background ones ...
    labels = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)(anchors, gt_boxes, gt_classes).labels.numpy()[0]
    probs = tf.sigmoid(flatten_levels(objectness, 1)[0, :, 0]).numpy()
    assert probs[labels == 1].mean() > 5 * probs[labels == 0].mean()
    # ... and inference gives padded proposals that are valid boxes inside the image.
    proposals = rpn_proposals(objectness, deltas, GEN(SIZES), [[64, 64], [64, 64]], max_proposals=20)
    boxes, valid = proposals.boxes.numpy(), proposals.valid.numpy()
    assert boxes.shape == (2, 20, 4) and valid.all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 64
    assert (np.diff(proposals.scores.numpy(), axis=1) <= 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="anchor levels"):
        rpn_proposals([tf.zeros([1, 2, 2, 3])], [], [], [[8, 8]])


def test_half_precision_head_outputs_give_float32_losses_and_proposals():
    rng = np.random.default_rng(34)
    anchors = GEN(SIZES)
    objectness = [rng.normal(size=(2, h, w, 3)).astype(np.float32) for h, w in SIZES]
    deltas = [rng.normal(0, 0.3, (2, h, w, 12)).astype(np.float32) for h, w in SIZES]
    half = [[tf.constant(x, tf.float16) for x in xs] for xs in (objectness, deltas)]
    gt_boxes, gt_classes = gt_batch()
    args = (tf.concat(anchors, 0), gt_boxes, gt_classes)
    full_loss = rpn_losses(flatten_levels(objectness, 1)[..., 0], flatten_levels(deltas, 4), *args, seed=[1, 1])
    half_loss = rpn_losses(flatten_levels(half[0], 1)[..., 0], flatten_levels(half[1], 4), *args, seed=[1, 1])
    for key in full_loss:
        assert half_loss[key].dtype == tf.float32
        np.testing.assert_allclose(half_loss[key], full_loss[key], rtol=2e-3)
    full = rpn_proposals(objectness, deltas, anchors, [[64, 64], [64, 64]], max_proposals=10)
    halfp = rpn_proposals(half[0], half[1], anchors, [[64, 64], [64, 64]], max_proposals=10)
    assert halfp.boxes.dtype == tf.float32
    np.testing.assert_allclose(halfp.boxes[:, :3], full.boxes[:, :3], atol=0.1)
