"""GA-RetinaNet head: serialization, losses vs a direct computation, masked detections, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.modeling.test_ga_head import gt_batch
from tfdet import losses as L
from tfdet.modeling.dense_heads.ga_head import GA_RETINA_SHAPE_MATCHER, GAAnchors, sparse_anchors
from tfdet.modeling.dense_heads.ga_retina_head import GARetinaHead, ga_retina_detections, ga_retina_losses
from tfdet.modeling.dense_heads.retina_head import UNIT_STDS
from tfdet.ops import box_ops
from tests.keras_io import assert_round_trip

ANCHORS = GAAnchors(strides=(8, 16), octave_base_scale=4, anchor_stds=UNIT_STDS, shape_matcher=GA_RETINA_SHAPE_MATCHER)
SIZES = [(8, 8), (4, 4)]  # a 64 x 64 image


def features(rng, batch=2, channels=8):
    return [tf.constant(rng.normal(size=(batch, h, w, channels)), tf.float32) for h, w in SIZES]


def test_head_shapes_and_serialization(tmp_path):
    head = GARetinaHead(num_classes=3, feat_channels=8, num_convs=2)
    inputs = [keras.Input((h, w, 8)) for h, w in SIZES]
    model = keras.Model(inputs, head(inputs))
    feats = features(np.random.default_rng(50))
    out = model(feats)
    assert [o.shape for o in out["cls"]] == [(2, 8, 8, 3), (2, 4, 4, 3)]
    assert [o.shape for o in out["deltas"]] == [(2, 8, 8, 4), (2, 4, 4, 4)]
    assert [o.shape for o in out["shape"]] == [(2, 8, 8, 2), (2, 4, 4, 2)]
    assert [o.shape for o in out["loc"]] == [(2, 8, 8, 1), (2, 4, 4, 1)]
    assert GARetinaHead.from_config(head.get_config()).get_config() == head.get_config()
    assert_round_trip(model, feats, tmp_path, rtol=1e-5, atol=1e-7)


def test_class_and_box_losses_match_a_direct_computation():
    rng = np.random.default_rng(51)
    out = {"loc": [tf.constant(rng.normal(size=(2, h, w, 1)), tf.float32) for h, w in SIZES],
           "shape": [tf.constant(rng.normal(0, 0.3, (2, h, w, 2)), tf.float32) for h, w in SIZES],
           "cls": [tf.constant(rng.normal(size=(2, h, w, 3)), tf.float32) for h, w in SIZES],
           "deltas": [tf.constant(rng.normal(0, 0.3, (2, h, w, 4)), tf.float32) for h, w in SIZES]}
    gt_boxes, gt_classes = gt_batch()
    gt_classes = np.minimum(gt_classes, 2)
    got = ga_retina_losses(out, ANCHORS, gt_boxes, gt_classes, [[64, 64], [64, 64]], num_classes=3, seed=[1, 1])
    # Direct: guided anchors of every location, NumPy Max-IoU 0.5 / 0.5 with low-quality matches >= 0.
    guided, _ = sparse_anchors(out["loc"], out["shape"], ANCHORS)
    anchors = np.concatenate([g.numpy() for g in guided], 1)
    cls = np.concatenate([c.numpy().reshape(2, -1, 3) for c in out["cls"]], 1)
    deltas = np.concatenate([d.numpy().reshape(2, -1, 4) for d in out["deltas"]], 1)
    total_cls, total_box, num_pos = 0.0, 0.0, 0
    for b in range(2):
        valid = gt_classes[b] >= 0
        gts = gt_boxes[b][valid]
        targets = np.zeros_like(cls[b])
        weights = np.ones(cls.shape[1])
        if len(gts):
            iou = box_ops.pairwise_iou(anchors[b], gts).numpy()
            matched = np.where(iou.max(1) >= 0.5, iou.argmax(1), -1)
            for g in range(len(gts)):
                matched[iou[:, g] == iou[:, g].max()] = g
            pos = matched >= 0
            targets[pos, gt_classes[b][valid][matched[pos]]] = 1
            enc = box_ops.encode_boxes(gts[matched[pos]], anchors[b][pos]).numpy()
            total_box += np.where(np.abs(deltas[b][pos] - enc) < 0.04, 0.5 * (deltas[b][pos] - enc) ** 2 / 0.04,
                                  np.abs(deltas[b][pos] - enc) - 0.02).sum()
            num_pos += pos.sum()
        total_cls += float(L.sigmoid_focal_loss(cls[b], targets, weights=weights, reduction="sum"))
    assert num_pos >= 2
    assert float(got["retina_cls"]) == pytest.approx(total_cls / num_pos, rel=1e-4)
    assert float(got["retina_box"]) == pytest.approx(total_box / num_pos, rel=1e-4)
    assert np.isfinite(float(got["loss_loc"])) and float(got["loss_shape"]) > 0


def test_detections_only_from_kept_locations():
    out = {"loc": [tf.fill((1, h, w, 1), -10.0) for h, w in SIZES],
           "shape": [tf.zeros((1, h, w, 2)) for h, w in SIZES],
           "cls": [tf.fill((1, h, w, 3), 3.0) for h, w in SIZES],  # every location confident
           "deltas": [tf.zeros((1, h, w, 4)) for h, w in SIZES]}
    out["loc"][0] = tf.tensor_scatter_nd_update(out["loc"][0], [[0, 4, 4, 0]], [2.0])
    det = ga_retina_detections(out, ANCHORS, [[64, 64]], max_detections=10)
    assert det.boxes.shape == (1, 10, 4)
    assert int(det.num_valid[0]) == 3  # one location x 3 classes
    # zero shape and deltas: the square of side 4 * 8 centred at (4 * 8, 4 * 8)
    np.testing.assert_allclose(det.boxes.numpy()[0, :3], [[16, 16, 48, 48]] * 3, atol=1e-4)
    assert sorted(det.classes.numpy()[0, :3].tolist()) == [0, 1, 2]


@pytest.mark.slow
def test_training_reduces_the_losses_on_a_fixed_batch():
    rng = np.random.default_rng(53)
    keras.utils.set_random_seed(53)  # layer initialisation independent of test order
    gt_boxes, gt_classes = gt_batch()
    gt_classes = np.minimum(gt_classes, 2)
    images = rng.uniform(0, 0.2, size=(2, 64, 64, 3)).astype(np.float32)
    for x1, y1, x2, y2 in gt_boxes[0, :2].astype(int):
        images[0, y1:y2, x1:x2] = 1.0
    images = tf.constant(images)
    stem = [keras.layers.Conv2D(8, 3, strides=8, padding="same", activation="relu"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")]
    head = GARetinaHead(num_classes=3, feat_channels=8, num_convs=1)
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            c3 = stem[0](images)
            out = head([c3, stem[1](c3)])
            losses = ga_retina_losses(out, ANCHORS, gt_boxes, gt_classes, [[64, 64], [64, 64]], 3, seed=seed)
            loss = tf.add_n(list(losses.values()))
        variables = stem[0].trainable_variables + stem[1].trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return losses

    history = [{k: float(v) for k, v in step(tf.constant([i, 0])).items()} for i in range(30)]
    total = np.array([sum(h.values()) for h in history])
    assert np.all(np.isfinite(total))
    assert total[-5:].mean() < 0.7 * total[:5].mean(), total
    for key in ("loss_loc", "loss_shape", "retina_cls"):
        values = [h[key] for h in history]
        assert np.mean(values[-5:]) < np.mean(values[:5]), (key, values)
    c3 = stem[0](images)
    det = ga_retina_detections(head([c3, stem[1](c3)]), ANCHORS, [[64, 64], [64, 64]], score_threshold=0.0,
                               max_detections=5)
    assert det.boxes.shape == (2, 5, 4) and det.classes.shape == (2, 5)
