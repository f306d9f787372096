"""GroupedConv2D: equal to a per-group convolution written independently (slices + tf.nn.conv2d +
concat) and to Keras' own grouped Conv2D, gradients included; serializes; ResNeXt builds with it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.layers import GroupedConv2D
from tfdet.modeling.backbones import build_backbone
from tests.keras_io import assert_round_trip


def per_group_reference(x, kernel, groups, strides, padding, dilation):
    xs = tf.split(x, groups, axis=-1)
    ks = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.nn.conv2d(a, b, strides, padding.upper(), dilations=dilation) for a, b in zip(xs, ks)], -1)


@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "valid", 1), (1, "same", 2), (2, "same", 1)])
def test_matches_per_group_convolution_and_keras(strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 11, 14, 16)), tf.float32)
    layer = GroupedConv2D(24, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=4, use_bias=True,
                          bias_initializer="random_normal")
    keras_layer = keras.layers.Conv2D(24, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=4)
    layer.build(x.shape)
    keras_layer.build(x.shape)
    keras_layer.set_weights(layer.get_weights())
    got = layer(x)
    want = per_group_reference(x, layer.kernel, 4, strides, padding, dilation) + layer.bias
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    upstream = tf.constant(rng.normal(size=got.shape), tf.float32)

    def grads(lyr):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(lyr(x) * upstream)
        return tape.gradient(loss, [x, *lyr.trainable_variables])

    for a, b in zip(grads(layer), grads(keras_layer)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_serialization_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 8)).astype("float32")
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, GroupedConv2D(8, 3, padding="same", groups=2, name="g")(inputs))
    loaded = assert_round_trip(model, x, tmp_path, rtol=1e-6, atol=1e-6)
    assert isinstance(loaded.get_layer("g"), GroupedConv2D) and loaded.get_layer("g").groups == 2
    clone = GroupedConv2D.from_config(model.get_layer("g").get_config())
    assert clone.get_config() == model.get_layer("g").get_config()


def test_resnext_uses_it():
    model = build_backbone({"type": "ResNeXt", "depth": 101, "groups": 32, "base_width": 4, "norm": "frozen_bn"})
    grouped = [layer for layer in model.layers if getattr(layer, "groups", 1) > 1]
    assert len(grouped) == 33 and all(isinstance(layer, GroupedConv2D) for layer in grouped)
