"""CARAFEUpsample and make_upsampler: shapes, the kernel-channel convention, serialization, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.layers import CARAFEUpsample, make_upsampler
from tfdet.ops import loader
from tests.keras_io import assert_round_trip

IMPLS = ["fused", "composite"] if loader.library_status().loaded else ["composite"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale", [2, 4])
def test_output_shape_and_dynamic_spatial_size(impl, scale):
    layer = CARAFEUpsample(scale_factor=scale, up_kernel=3, up_group=2, compressed_channels=8, impl=impl)
    inputs = keras.Input(shape=(None, None, 6))
    model = keras.Model(inputs, layer(inputs))
    assert model.output.shape == (None, None, None, 6)
    out = model(tf.random.normal([2, 3, 5, 6]))
    assert out.shape == (2, 3 * scale, 5 * scale, 6)
    assert layer.compute_output_shape((2, 3, 5, 6)) == (2, 3 * scale, 5 * scale, 6)


def expected_selected_taps(features, scale, k, groups, tap_of):
    """Output when sub-pixel (i, j) of group g uses only tap tap_of(i, j, g) (zero outside the map)."""
    n, h, w, c = features.shape
    cg, r = c // groups, (k - 1) // 2
    out = np.zeros((n, h * scale, w * scale, c))
    for y in range(h * scale):
        for x in range(w * scale):
            for g in range(groups):
                dy, dx = divmod(tap_of(y % scale, x % scale, g), k)
                iy, ix = y // scale + dy - r, x // scale + dx - r
                if 0 <= iy < h and 0 <= ix < w:
                    out[:, y, x, g * cg:(g + 1) * cg] = features[:, iy, ix, g * cg:(g + 1) * cg]
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder_channel_convention_pixel_shuffle_and_softmax(impl):
    """Encoder channel (i*s + j)*G*k*k + g*k*k + tap is the logit of `tap` for sub-pixel (i, j) and group g."""
    scale, k, groups = 2, 3, 2
    layer = CARAFEUpsample(scale_factor=scale, up_kernel=k, up_group=groups, compressed_channels=4, impl=impl)
    features = np.random.default_rng(0).normal(size=(2, 4, 3, 6)).astype(np.float32)
    layer(features)

    def tap_of(i, j, g):
        return (4 * i + 3 * j + 5 * g + 1) % (k * k)  # all distinct over (i, j, g) for s=2, G=2

    kernel, bias = layer.content_encoder.get_weights()
    bias = np.zeros_like(bias)
    for i in range(scale):
        for j in range(scale):
            for g in range(groups):
                bias[(i * scale + j) * groups * k * k + g * k * k + tap_of(i, j, g)] = 40.0
    layer.content_encoder.set_weights([np.zeros_like(kernel), bias])
    np.testing.assert_allclose(layer(features), expected_selected_taps(features, scale, k, groups, tap_of), atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_logits_give_uniform_kernels(impl):
    """Zero encoder output: softmax over the k*k taps gives 1/k^2 each, i.e. box filter then nearest."""
    layer = CARAFEUpsample(scale_factor=2, up_kernel=5, compressed_channels=4, impl=impl)
    features = np.random.default_rng(1).normal(size=(1, 6, 5, 3)).astype(np.float32)
    layer(features)
    layer.content_encoder.set_weights([np.zeros_like(w) for w in layer.content_encoder.get_weights()])
    box = tf.nn.depthwise_conv2d(features, tf.ones([5, 5, 3, 1]) / 25.0, [1, 1, 1, 1], "SAME").numpy()
    np.testing.assert_allclose(layer(features), np.repeat(np.repeat(box, 2, 1), 2, 2), rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    layer = CARAFEUpsample(scale_factor=4, up_kernel=3, up_group=2, encoder_kernel=5, encoder_dilation=2,
                           compressed_channels=16, impl="composite", name="up")
    features = tf.random.normal([1, 4, 4, 8])
    out = layer(features)
    clone = CARAFEUpsample.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(features)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(features), out, rtol=1e-6, atol=1e-6)


def test_keras_file_save_and_load(tmp_path):
    inputs = keras.Input(shape=(None, None, 8))
    hidden = CARAFEUpsample(scale_factor=2, up_kernel=3, up_group=2, compressed_channels=8)(inputs)
    outputs = make_upsampler("carafe", 2, up_kernel=5, compressed_channels=4, name="second")(hidden)
    model = keras.Model(inputs, outputs)
    features = tf.random.normal([2, 3, 4, 8])
    loaded = assert_round_trip(model, features, tmp_path)
    assert isinstance(loaded.get_layer("second"), CARAFEUpsample)
    assert loaded.get_layer("second").up_kernel == 5


def test_tiny_upsampling_model_trains():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6, 6, 4)).astype(np.float32)
    # A target that needs content: the upsampled map of the channel-wise maximum, sharp at 2x.
    y = np.repeat(np.repeat(x.max(axis=-1, keepdims=True), 2, 1), 2, 2)
    inputs = keras.Input(shape=(6, 6, 4))
    up = CARAFEUpsample(scale_factor=2, up_kernel=3, compressed_channels=8)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(up(keras.layers.Conv2D(8, 3, padding="same")(inputs))))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    encoder_before = up.content_encoder.get_weights()[0].copy()
    keras.utils.set_random_seed(0)
    losses = model.fit(x, y, batch_size=8, epochs=8, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    assert not np.allclose(up.content_encoder.get_weights()[0], encoder_before)  # gradients reach the encoder
    assert model.predict(x[:2], verbose=0).shape == (2, 12, 12, 1)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(up_kernel=4), "up_kernel"),
    (dict(encoder_kernel=2), "encoder_kernel"),
    (dict(scale_factor=0), "scale_factor"),
    (dict(compressed_channels=0), "compressed_channels"),
    (dict(impl="cuda"), "impl"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        CARAFEUpsample(**kwargs)


def test_channels_must_divide_into_groups():
    with pytest.raises(ValueError, match="divisible by up_group"):
        CARAFEUpsample(up_group=4)(tf.zeros([1, 3, 3, 6]))


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "deconv", "carafe"])
@pytest.mark.parametrize("scale", [2, 4])
def test_make_upsampler_kinds(kind, scale):
    layer = make_upsampler(kind, scale, channels=5, **({"compressed_channels": 4} if kind == "carafe" else {}))
    features = tf.random.normal([2, 3, 4, 6])
    out = layer(features)
    assert out.shape == (2, 3 * scale, 4 * scale, 5 if kind == "deconv" else 6)
    if kind == "nearest":
        np.testing.assert_array_equal(out, np.repeat(np.repeat(features.numpy(), scale, 1), scale, 2))
    if kind == "deconv":
        assert layer.kernel_size == (scale, scale) and layer.strides == (scale, scale)
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()


def test_make_upsampler_bad_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        make_upsampler("pixel_shuffle")
    with pytest.raises(ValueError, match="needs channels"):
        make_upsampler("deconv", 2)
    with pytest.raises(ValueError, match="only apply to kind='carafe'"):
        make_upsampler("nearest", 2, up_kernel=5)
