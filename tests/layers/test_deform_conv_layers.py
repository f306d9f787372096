"""DeformConv2D / ModulatedDeformConv2D: initial behaviour, explicit offsets, serialization, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.layers.deform_conv import DeformConv2D, ModulatedDeformConv2D
from tfdet.ops.deform_conv import deform_conv2d
from tests.keras_io import assert_round_trip


def _images(seed=0, shape=(2, 8, 9, 4)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (1, 2)])
def test_starts_as_plain_convolution(strides, dilation):
    x = _images()
    layer = DeformConv2D(6, 3, strides=strides, dilation_rate=dilation, deformable_groups=2)
    got = layer(x)
    want = tf.nn.conv2d(x, layer.kernel, strides=strides, dilations=dilation,
                        padding=[[0, 0], [dilation, dilation], [dilation, dilation], [0, 0]]) + layer.bias
    assert got.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_modulated_starts_as_half_convolution():
    x = _images(1)
    layer = ModulatedDeformConv2D(5, 3, use_bias=False, deformable_groups=4)
    got = layer(x)
    want = 0.5 * tf.nn.conv2d(x, layer.kernel, strides=1, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert layer.offset_kernel.shape == (3, 3, 4, 3 * 4 * 9)


def test_explicit_offsets_and_mask():
    x = _images(2)
    rng = np.random.default_rng(3)
    offsets = rng.normal(size=(2, 8, 9, 18)).astype(np.float32)
    mask = rng.uniform(size=(2, 8, 9, 9)).astype(np.float32)
    v1 = DeformConv2D(3, 3, use_offset_conv=False)
    v2 = ModulatedDeformConv2D(3, 3, use_offset_conv=False)
    out1, out2 = v1(x, offsets), v2(x, offsets, mask)
    np.testing.assert_allclose(out1, deform_conv2d(x, offsets, v1.kernel, bias=v1.bias, padding=1), atol=1e-5)
    np.testing.assert_allclose(out2, deform_conv2d(x, offsets, v2.kernel, mask, v2.bias, padding=1), atol=1e-5)
    assert not any("offset" in w.name for w in v1.weights)
    with pytest.raises(ValueError, match="needs offsets"):
        v1(x)
    with pytest.raises(ValueError, match="use_offset_conv=False"):
        DeformConv2D(3)(x, offsets)


def test_bad_configuration():
    with pytest.raises(ValueError, match="odd kernel_size"):
        DeformConv2D(4, (2, 3))
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2D(5, groups=2)
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConv2D(4, deformable_groups=3)(_images())


@pytest.mark.parametrize("cls", [DeformConv2D, ModulatedDeformConv2D])
def test_serialization_round_trip(cls, tmp_path):
    layer = cls(6, (3, 3), strides=2, padding=(1, 1), groups=2, deformable_groups=2, name="dcn")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layer(inputs))
    x = _images(4, (1, 8, 8, 4))
    # Move the offset branch off zero so the round trip has to carry it.
    rng = np.random.default_rng(5)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape, scale=0.3).astype(np.float32))
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = assert_round_trip(model, x, tmp_path, rtol=1e-6, atol=1e-6)
    assert isinstance(restored.get_layer("dcn"), cls)


@pytest.mark.parametrize("cls", [DeformConv2D, ModulatedDeformConv2D])
def test_tiny_model_trains(cls):
    """A deformable layer in a tiny classifier: the loss falls and the offset branch learns."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    y = (x[:, 2:6, 2:6, 0].mean(axis=(1, 2)) > 0).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), cls(8, 3, deformable_groups=1),
                              keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.02), keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=25, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.7 * history[0]
    assert np.abs(model.layers[0].offset_kernel.numpy()).max() > 0
