"""DeformRoIPool / ModulatedDeformRoIPoolPack: initial behaviour, serialization, gradients, training."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.layers.deform_roi_pool import DeformRoIPool, ModulatedDeformRoIPoolPack
from tfdet.ops.roi_align import roi_align
from tests.keras_io import assert_round_trip


def _inputs(seed=0, batch=2, num_boxes=3, channels=4):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, 12, 14, channels)).astype(np.float32)
    x1, y1 = rng.uniform(0, 30, (batch, num_boxes)), rng.uniform(0, 25, (batch, num_boxes))
    boxes = np.stack([x1, y1, x1 + rng.uniform(4, 24, x1.shape), y1 + rng.uniform(4, 20, y1.shape)], -1)
    return features, boxes.astype(np.float32)


@pytest.mark.parametrize("cls, scale", [(DeformRoIPool, 1.0), (ModulatedDeformRoIPoolPack, 0.5)])
def test_starts_as_aligned_roi_align(cls, scale):
    features, boxes = _inputs()
    layer = cls(output_size=(3, 4), spatial_scale=0.5, deform_fc_channels=8)
    got = layer(features, boxes)
    assert got.shape == (2, 3, 3, 4, 4) == layer.compute_output_shape(features.shape, boxes.shape)
    want = roi_align(features, boxes.reshape(-1, 4), np.repeat([0, 1], 3), (3, 4), spatial_scale=0.5, aligned=True)
    np.testing.assert_allclose(got, scale * tf.reshape(want, got.shape), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [DeformRoIPool, ModulatedDeformRoIPoolPack])
def test_serialization_round_trip(cls, tmp_path):
    features, boxes = _inputs(1)
    layer = cls(output_size=2, spatial_scale=0.5, sampling_ratio=2, gamma=0.2, deform_fc_channels=6, name="pool")
    f_in, b_in = keras.Input((12, 14, 4)), keras.Input((3, 4))
    model = keras.Model([f_in, b_in], layer(f_in, b_in))
    rng = np.random.default_rng(2)
    for w in model.weights:  # move the offset/mask branches off their initial zeros
        w.assign(rng.normal(size=w.shape, scale=0.3).astype(np.float32))
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = assert_round_trip(model, [features, boxes], tmp_path, rtol=1e-5, atol=1e-5)
    assert isinstance(restored.get_layer("pool"), cls)


@pytest.mark.parametrize("cls", [DeformRoIPool, ModulatedDeformRoIPoolPack])
def test_tiny_model_trains(cls):
    """The pooled features of two boxes per image feed a linear regressor: the loss falls and the
    zero-initialized offset branch receives gradient and moves."""
    features, boxes = _inputs(3, batch=8, num_boxes=2, channels=3)
    target = features[..., 0].mean(axis=(1, 2))[:, None].repeat(2, 1).astype(np.float32)
    keras.utils.set_random_seed(0)
    f_in, b_in = keras.Input((12, 14, 3)), keras.Input((2, 4))
    pooled = cls(output_size=2, spatial_scale=0.5, deform_fc_channels=8, name="pool")(f_in, b_in)
    out = keras.layers.Dense(1)(keras.layers.Reshape((2, 12))(pooled))
    model = keras.Model([f_in, b_in], keras.layers.Reshape((2,))(out))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    history = model.fit([features, boxes], target, epochs=20, batch_size=8, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.5 * history[0]
    assert np.abs(model.get_layer("pool").offset_fc[-1].kernel.numpy()).max() > 0


def test_bad_boxes():
    features, boxes = _inputs()
    with pytest.raises(ValueError, match=r"boxes must be \[B, K, 4\]"):
        DeformRoIPool(deform_fc_channels=4)(features, boxes[0])
