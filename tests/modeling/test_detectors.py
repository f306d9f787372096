"""Detectors on tiny configs: real train steps (finite losses, gradients into every head), the loss falls
on a fixed batch, padded inference with valid boxes, images without objects, serialization."""

import importlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.engine import Trainer
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.roi_heads import paste_masks

FAMILIES = ["faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet"]
B, H, W, M = 2, 64, 96, 4


def config(family, arg="tiny"):
    return importlib.import_module(f"configs.{family}").get_config(arg)


def make_batch(empty=False):
    """Image 0: two bright boxes on a dark noisy background; image 1: no objects, valid size 64x80."""
    rng = np.random.default_rng(50)
    images = rng.uniform(0, 50, (B, H, W, 3)).astype(np.float32)
    boxes = np.zeros((B, M, 4), np.float32)
    classes = np.full((B, M), -1, np.int32)
    masks = np.zeros((B, M, 28, 28), np.uint8)  # cropped to the gt boxes, as tfdet.data.pipeline gives them
    keypoints = np.zeros((B, M, 17, 3), np.float32)
    if not empty:
        boxes[0, :2] = [[10, 8, 40, 40], [50, 20, 90, 60]]
        classes[0, :2] = [0, 2]
        for j in range(2):
            x1, y1, x2, y2 = boxes[0, j].astype(int)
            images[0, y1:y2, x1:x2] = 230
            masks[0, j, :14] = 1  # the top half of the box
            keypoints[0, j, :, 0] = np.linspace(x1 + 1, x2 - 1, 17)
            keypoints[0, j, :, 1] = (y1 + y2) / 2
            keypoints[0, j, :, 2] = 2
    return dict(images=tf.constant(images), image_info=tf.constant([[[64, 96], [1, 1], [64, 96]], [[64, 80], [1, 1], [64, 80]]], tf.float32),
                gt_boxes=tf.constant(boxes), gt_classes=tf.constant(classes), gt_is_crowd=tf.zeros((B, M), tf.bool),
                gt_masks=tf.constant(masks), gt_keypoints=tf.constant(keypoints))


_MODELS = {}


def model_for(family, seed=1):
    """The tiny detector of `family` and its Trainer (Adam), created once per (family, seed) for the tests."""
    return trained_model_for(family, seed)[0]


def trained_model_for(family, seed=1):
    """(model, Trainer with Adam) of model_for."""
    if (family, seed) not in _MODELS:
        keras.utils.set_random_seed(seed)
        model = build_detector(config(family).model)
        _MODELS[family, seed] = model, Trainer(model, optimizer=keras.optimizers.Adam(1e-3))
    return _MODELS[family, seed]


def check_detections(out, family, num_classes, max_det, score_threshold=0.05):
    n = out["num_detections"].numpy()
    boxes, scores, classes = (out[k].numpy() for k in ("detection_boxes", "detection_scores", "detection_classes"))
    assert boxes.shape == (B, max_det, 4) and scores.shape == (B, max_det) and classes.shape == (B, max_det)
    sizes = [(64, 96), (64, 80)]
    for b in range(B):
        k = n[b]
        assert ((classes[b, :k] >= 0) & (classes[b, :k] < num_classes)).all() and (classes[b, k:] == -1).all()
        assert (boxes[b, k:] == 0).all() and (scores[b, k:] == 0).all()
        assert (np.diff(scores[b, :k]) <= 1e-6).all() and (scores[b, :k] > score_threshold).all()
        x1, y1, x2, y2 = boxes[b, :k].T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= sizes[b][1]).all() and (y2 <= sizes[b][0]).all()
        assert (x2 >= x1).all() and (y2 >= y1).all()
    if family == "mask_rcnn":
        masks = out["detection_masks"].numpy()
        assert masks.shape == (B, max_det, 28, 28) and (masks >= 0).all() and (masks <= 1).all()
        pasted = paste_masks(out["detection_masks"], out["detection_boxes"], (H, W))
        assert pasted.shape == (B, max_det, H, W)
    if family == "keypoint_rcnn":
        points = out["detection_keypoints"].numpy()
        assert points.shape == (B, max_det, 17, 3)
        for b in range(B):
            k = n[b]
            inside_x = (points[b, :k, :, 0] >= boxes[b, :k, None, 0]) & (points[b, :k, :, 0] <= boxes[b, :k, None, 2])
            assert inside_x.all() and (points[b, k:] == 0).all()


def checked_losses_and_gradients(model, batch):
    """(losses, {variable path: gradient}) of compute_losses on `batch`, checked: every loss finite and
    positive, every trainable variable of every head with a finite, non-None gradient."""
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses = model.compute_losses(batch, training=True)
        total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, variables)
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values()), losses
    missing = [v.path for v, g in zip(variables, grads) if g is None]
    assert not missing, missing
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    return losses, {v.path: g for v, g in zip(variables, grads)}


@pytest.mark.parametrize("family", FAMILIES)
def test_train_step_and_inference(family):
    model, trainer = trained_model_for(family)
    batch = make_batch()
    losses, _ = checked_losses_and_gradients(model, batch)
    expected = {"faster_rcnn": {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"},
                "retinanet": {"retina_cls", "retina_box"}}
    expected["mask_rcnn"] = expected["faster_rcnn"] | {"mask"}
    expected["keypoint_rcnn"] = expected["faster_rcnn"] | {"keypoint"}
    assert set(losses) == expected[family]
    # A whole Keras train_step (optimizer included) on a batch without any object.
    out = trainer.train_step(make_batch(empty=True))
    assert all(np.isfinite(float(v)) for v in out.values()), out
    cfg = config(family).model
    max_det = cfg.retina.max_detections if family == "retinanet" else cfg.roi.max_detections
    check_detections(model.predict_step(batch), family, cfg.num_classes, max_det)
    check_detections(tf.function(model.predict_step)(batch), family, cfg.num_classes, max_det)


def check_round_trip(model, batch, tmp_path):
    """from_config + set_weights, and a .keras save / load, give the same outputs; returns the loaded model."""
    want = model.predict_step(batch)
    clone = type(model).from_config(model.get_config())
    clone.build()
    clone.set_weights(model.get_weights())
    got = clone.predict_step(batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    got = loaded.predict_step(batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    return loaded


@pytest.mark.parametrize("family", FAMILIES)
def test_serialization_round_trip(family, tmp_path):
    check_round_trip(model_for(family), make_batch(), tmp_path)


def train_on_fixed_batch(model_config, seed, learning_rate, steps):
    """(model, {log name: [steps] array}) after `steps` Adam train steps on make_batch() from seed."""
    keras.utils.set_random_seed(seed)
    model = build_detector(model_config)
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(learning_rate))
    step = tf.function(trainer.train_step)
    batch = make_batch()
    history = [{k: float(v) for k, v in step(batch).items()} for _ in range(steps)]
    return model, {key: np.array([h[key] for h in history]) for key in history[0]}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_on_a_fixed_batch(family):
    _, history = train_on_fixed_batch(config(family).model, 2, 1e-3, 40)
    history = history["loss"]
    assert np.isfinite(history).all()
    assert np.mean(history[-5:]) < 0.6 * np.mean(history[:3]), history


@pytest.mark.slow
def test_keras_fit_evaluate_predict():
    """The Keras loops drive the detector through its Trainer (train_step / test_step / predict_step) on a
    tf.data pipeline; the detector's own fit() points to the Trainer."""
    keras.utils.set_random_seed(3)
    model = build_detector(config("mask_rcnn").model)
    trainer = Trainer(model, optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    data = tf.data.Dataset.from_tensors(make_batch()).repeat(3)
    history = trainer.fit(data, epochs=1, verbose=0)
    assert {"loss", "mask", "rcnn_cls"} <= set(history.history) and np.isfinite(history.history["loss"]).all()
    assert np.isfinite(trainer.evaluate(data, verbose=0, return_dict=True)["loss"])
    out = trainer.predict(data.take(1), verbose=0)
    assert out["detection_masks"].shape == (B, 20, 28, 28)


def test_mask_rcnn_with_carafe_in_fpn_and_mask_head_trains():
    """The `carafe` switch's integration points: FPN top-down and mask-head upsampling."""
    cfg = config("mask_rcnn")
    cfg.model.neck.upsample = "carafe"
    cfg.model.mask.upsample = "carafe"
    keras.utils.set_random_seed(4)
    model = build_detector(cfg.model)
    batch = make_batch()
    with tf.GradientTape() as tape:
        losses = model.compute_losses(batch, training=True)
        total = tf.add_n(list(losses.values()))
    carafe_vars = [v for v in model.trainable_variables  # CARAFE's own sub-layers (upsamplers are named by place)
                   if "channel_compressor" in v.path or "content_encoder" in v.path]
    relative = [v.path.removeprefix(model.name + "/") for v in carafe_vars]  # the path below the model
    owners = {re.sub(r"_\d+$", "", path.split("/")[0]) for path in relative}
    assert owners == {"fpn", "mask_head"}, [v.path for v in carafe_vars]
    grads = tape.gradient(total, carafe_vars)
    assert np.isfinite(float(total)) and "mask" in losses
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    out = model.predict_step(batch)
    assert out["detection_masks"].shape[-2:] == (28, 28)
