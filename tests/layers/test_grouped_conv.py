"""GroupedConv2D: equal to a per-group convolution written independently (slices + tf.nn.conv2d +
concat) and to Keras' own grouped Conv2D, gradients included, with TensorFlow's oneDNN CPU kernels and
without (CI runs this file under TF_ENABLE_ONEDNN_OPTS=0 and =1); both paths eagerly, in tf.function,
under XLA and through a SavedModel; serializes; ResNeXt builds with it."""

import platform

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from tfdet.layers import GroupedConv2D
from tfdet.layers import grouped_conv
from tfdet.modeling.backbones import build_backbone
from tests.keras_io import assert_round_trip


pytestmark = pytest.mark.cpu_kernels


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


def test_the_probe_says_whether_the_cpu_kernels_have_grouped_gradients():
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 9, 9, 8)), tf.float32)
    kernel = tf.Variable(tf.ones([3, 3, 2, 8]))
    with tf.device("/CPU:0"):
        try:
            with tf.GradientTape() as tape:
                y = tf.nn.convolution(x, kernel, strides=2, padding="SAME")
            tape.gradient(y, kernel)
            native_trains = True
        except tf.errors.InvalidArgumentError as err:
            assert "grouped convolutions" in str(err)
            native_trains = False
    assert grouped_conv.cpu_has_grouped_gradients() == native_trains
    if platform.machine() in ("x86_64", "AMD64"):  # x86 TensorFlow: the oneDNN kernels have them, Eigen's not
        assert native_trains == _pywrap_util_port.IsMklEnabled()


@pytest.mark.parametrize("device,cpu_ok,gpu_visible,native", [
    ("/job:localhost/replica:0/task:0/device:CPU:0", False, True, False),
    ("/job:localhost/replica:0/task:0/device:CPU:0", True, False, True),
    ("/device:GPU:1", False, True, True),
    ("/device:TPU:0", False, False, True),
    ("", False, True, True),    # unplaced in a graph: TensorFlow places a conv on the GPU
    ("", False, False, False),
    ("", True, False, True),
])
def test_path_choice(device, cpu_ok, gpu_visible, native):
    assert grouped_conv.native_gradients_on(device, cpu_ok, gpu_visible) == native


def _conv_ops(fn, *args):
    return [op for op in fn.get_concrete_function(*args).graph.get_operations() if op.type == "Conv2D"]


@pytest.mark.parametrize("cpu_ok", [True, False])
def test_layer_takes_the_path_the_kernels_allow_and_trains(monkeypatch, cpu_ok):
    """The path follows cpu_has_grouped_gradients (forced both ways here): eagerly, in a tf.function train
    step and under XLA, equal to the reference; the native path only where the CPU kernels allow it."""
    really = grouped_conv.cpu_has_grouped_gradients()
    monkeypatch.setattr(grouped_conv, "cpu_has_grouped_gradients", lambda: cpu_ok)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 9, 12, 12)), tf.float32)
    layer = GroupedConv2D(6, 3, strides=2, padding="same", groups=3)
    layer.build(x.shape)
    upstream = tf.constant(rng.normal(size=(2, 5, 6, 6)), tf.float32)

    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs) * upstream)
        return tape.gradient(loss, [inputs, layer.kernel, layer.bias])

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum((per_group_reference(x, layer.kernel, 3, 2, "same", 1) + layer.bias) * upstream)
    want = tape.gradient(loss, [x, layer.kernel, layer.bias])
    with tf.device("/CPU:0"):
        traced = tf.function(step)
        assert len(_conv_ops(traced, x)) == (1 if cpu_ok else 3)
        if cpu_ok and not really:  # the native path on plain CPU kernels: what the fallback avoids
            with pytest.raises(tf.errors.InvalidArgumentError, match="grouped convolutions"):
                step(x)
            return
        for got in (step(x), traced(x), tf.function(step, jit_compile=True)(x)):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_saved_model_with_dynamic_spatial_shape(tmp_path):
    rng = np.random.default_rng(4)
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, GroupedConv2D(8, 3, padding="same", groups=4, dilation_rate=2)(inputs))
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, None, None, 8])])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    for shape in [(1, 7, 9, 8), (2, 12, 5, 8)]:
        x = tf.constant(rng.normal(size=shape), tf.float32)
        want = per_group_reference(x, model.layers[1].kernel, 4, 1, "same", 2) + model.layers[1].bias
        np.testing.assert_allclose(loaded.serve(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
