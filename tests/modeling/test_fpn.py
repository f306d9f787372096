"""FPN against a NumPy reference written from the paper, both extra-level modes, CARAFE wiring,
norm option, a backbone + FPN train step and serialization."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdet  # noqa: F401
from tfdet.modeling.backbones import resnet
from tfdet.modeling.necks import FPN
from tests.keras_io import assert_round_trip


def _conv_np(x, kernel, bias=None, stride=1, pad=0):
    """Cross-correlation NHWC x HWIO with symmetric zero padding."""
    kh, kw = kernel.shape[:2]
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out += patch @ kernel[i, j]
    return out if bias is None else out + bias


def _fpn_np(features, layer, extra, extra_source, relu_before_extra):
    levels = layer.levels
    lat = {lvl: _conv_np(features[lvl], *conv.get_weights()) for lvl, conv in zip(levels, layer.lateral_convs)}
    merged = {levels[-1]: lat[levels[-1]]}
    for lvl in reversed(levels[:-1]):
        up = merged[lvl + 1].repeat(2, axis=1).repeat(2, axis=2)
        merged[lvl] = lat[lvl] + up[:, :lat[lvl].shape[1], :lat[lvl].shape[2]]
    out = {lvl: _conv_np(merged[lvl], *conv.get_weights(), pad=1) for lvl, conv in zip(levels, layer.output_convs)}
    for i, lvl in enumerate(range(levels[-1] + 1, layer.max_level + 1)):
        if extra == "maxpool":
            out[lvl] = out[lvl - 1][:, ::2, ::2]
            continue
        if i == 0:
            src = features[levels[-1]] if extra_source == "input" else out[levels[-1]]
        else:
            src = np.maximum(out[lvl - 1], 0) if relu_before_extra else out[lvl - 1]
        out[lvl] = _conv_np(src, *layer.extra_convs[i].get_weights(), stride=2, pad=1)
    return out


def _features(rng, levels, height, width, channels=(3, 5, 6, 7)):
    feats, h, w = {}, height, width
    for lvl in range(2, max(levels) + 1):
        if lvl in levels:
            feats[lvl] = rng.normal(size=(2, h, w, channels[lvl - 2])).astype("float32")
        h, w = -(-h // 2), -(-w // 2)
    return feats


@pytest.mark.parametrize("height,width", [(16, 24), (17, 25)])
@pytest.mark.parametrize("kwargs", [
    {"min_level": 2, "max_level": 6, "extra": "maxpool"},
    {"min_level": 3, "max_level": 7, "extra": "conv", "extra_source": "input"},
    {"min_level": 3, "max_level": 7, "extra": "conv", "extra_source": "output", "relu_before_extra": False},
])
def test_matches_numpy_reference(height, width, kwargs):
    rng = np.random.default_rng(0)
    feats = _features(rng, range(kwargs["min_level"], 6), height, width)
    layer = FPN(out_channels=4, **kwargs)
    got = layer(feats)
    assert sorted(got) == list(range(kwargs["min_level"], kwargs["max_level"] + 1))
    for w in layer.weights:  # random biases, so bias handling is checked too
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    got = layer(feats)
    expected = _fpn_np(feats, layer, kwargs["extra"], kwargs.get("extra_source", "input"),
                       kwargs.get("relu_before_extra", True))
    for lvl in sorted(expected):
        rows = height  # `height` is the level-2 size; each level halves it (rounding up)
        for _ in range(lvl - 2):
            rows = -(-rows // 2)
        assert got[lvl].shape == expected[lvl].shape and got[lvl].shape[1] == rows, lvl
        np.testing.assert_allclose(got[lvl].numpy(), expected[lvl], rtol=1e-4, atol=1e-4)


def test_resnet_fpn_p2_p6_and_p3_p7_shapes():
    images = keras.Input((None, None, 3))
    c = resnet(50)(images)
    p26 = FPN(min_level=2, max_level=6)(c)
    p37 = FPN(min_level=3, max_level=7, extra="conv")({k: v for k, v in c.items() if k >= 3})
    model = keras.Model(images, {"a": p26, "b": p37})
    out = model(np.zeros((1, 64, 96, 3), "float32"))
    for group, levels in (("a", range(2, 7)), ("b", range(3, 8))):
        for lvl in levels:
            expected = (1, -(-64 // 2 ** lvl), -(-96 // 2 ** lvl), 256)
            assert tuple(out[group][lvl].shape) == expected, (group, lvl)


def test_norm_option_drops_bias_and_normalizes():
    feats = _features(np.random.default_rng(1), range(3, 6), 16, 16)
    layer = FPN(out_channels=32, min_level=3, max_level=7, extra="conv", norm="gn")
    out = layer(feats)
    assert all(not conv.use_bias for conv in layer.lateral_convs + layer.output_convs + layer.extra_convs)
    assert len(layer.norms) == 3 + 3 + 2
    assert all(isinstance(n, keras.layers.GroupNormalization) for n in layer.norms)
    assert tuple(out[7].shape) == (2, 1, 1, 32)


@pytest.mark.parametrize("impl", ["composite", None])
def test_carafe_upsampling_uses_carafe_layers(impl):
    from tfdet.layers import CARAFEUpsample

    layer = FPN(out_channels=8, min_level=2, max_level=6, upsample="carafe", impl=impl)
    feats = _features(np.random.default_rng(2), range(2, 6), 17, 24)
    out = layer(feats)
    assert len(layer.upsamplers) == 3 and all(isinstance(u, CARAFEUpsample) for u in layer.upsamplers)
    assert all(u.impl == impl for u in layer.upsamplers) and layer.get_config()["impl"] == impl
    nearest = FPN(out_channels=8, min_level=2, max_level=6)
    nearest(feats)
    nearest.set_weights(layer.get_weights()[:len(nearest.get_weights())])  # the lateral and output convs come first
    assert out[2].shape == nearest(feats)[2].shape
    assert not np.allclose(out[2].numpy(), nearest(feats)[2].numpy())  # the upsampler is really used


def _carafe_lateral_np(features, layer):
    """mmdetection FPN_CARAFE's wiring (necks/fpn_carafe.py) in NumPy: laterals (extra ones 3x3 / 2 on C_top,
    then on the previous extra lateral), top-down through the layer's own upsamplers (CARAFEUpsample has its
    own NumPy test), cropped, added; an output conv on every level; no max pool."""
    top = max(features)
    levels = range(layer.min_level, layer.max_level + 1)
    lat = {}
    for lvl, conv in zip(levels, layer.lateral_convs):
        if lvl <= top:
            lat[lvl] = _conv_np(features[lvl], *conv.get_weights())
        else:
            lat[lvl] = _conv_np(features[top] if lvl == top + 1 else lat[lvl - 1], *conv.get_weights(), stride=2, pad=1)
    merged = {layer.max_level: lat[layer.max_level]}
    for i, lvl in reversed(list(enumerate(levels[:-1]))):
        up = layer.upsamplers[i](merged[lvl + 1].astype("float32")).numpy()
        merged[lvl] = lat[lvl] + up[:, :lat[lvl].shape[1], :lat[lvl].shape[2]]
    return {lvl: _conv_np(merged[lvl], *conv.get_weights(), pad=1) for lvl, conv in zip(levels, layer.output_convs)}


@pytest.mark.parametrize("height,width,max_level", [(16, 24, 6), (17, 25, 6), (16, 24, 7)])
def test_carafe_lateral_matches_numpy_reference(height, width, max_level):
    rng = np.random.default_rng(7)
    feats = _features(rng, range(2, 6), height, width)
    layer = FPN(out_channels=4, min_level=2, max_level=max_level, extra="carafe_lateral", upsample="carafe")
    layer(feats)
    for w in layer.weights:  # CARAFE's kernel logits small enough that float32 rounding stays small after softmax
        w.assign(rng.normal(size=w.shape).astype("float32") * (0.1 if "content_encoder" in w.path else 0.5))
    got = layer(feats)
    expected = _carafe_lateral_np(feats, layer)
    assert sorted(got) == list(range(2, max_level + 1))
    for lvl in sorted(expected):
        assert got[lvl].shape == expected[lvl].shape, lvl
        scale = np.abs(expected[lvl]).max()
        np.testing.assert_allclose(got[lvl].numpy(), expected[lvl], rtol=1e-5, atol=1e-5 * scale, err_msg=f"P{lvl}")
    # P6 is the extra lateral's output conv, not a max pool of P5.
    assert not np.allclose(got[6].numpy(), got[5].numpy()[:, ::2, ::2], atol=1e-2)
    names = {w.path.split("/")[1] for w in layer.weights}
    levels = range(2, max_level + 1)
    assert names == {f"lateral{lvl}" for lvl in levels} | {f"output{lvl}" for lvl in levels} | \
        {f"upsample{lvl}" for lvl in levels[:-1]}
    assert [layer.lateral_convs[i].kernel.shape[:2] for i in (3, 4)] == [(1, 1), (3, 3)]
    assert layer.lateral_convs[4].kernel.shape[2] == feats[5].shape[-1]  # the first extra lateral reads C5
    clone = FPN.from_config(layer.get_config())
    assert clone.extra == "carafe_lateral"
    clone(feats)
    clone.set_weights(layer.get_weights())
    for lvl, value in clone(feats).items():
        np.testing.assert_array_equal(value.numpy(), got[lvl].numpy())


def test_carafe_lateral_round_trip(tmp_path):
    images = keras.Input((None, None, 3))
    c = {2: keras.layers.Conv2D(8, 3, strides=4, padding="same")(images)}
    for lvl in (3, 4, 5):
        c[lvl] = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c[lvl - 1])
    model = keras.Model(images, FPN(out_channels=8, upsample="carafe", extra="carafe_lateral")(c))
    x = np.random.default_rng(8).normal(size=(1, 64, 96, 3)).astype("float32")
    assert tuple(model(x)[6].shape) == (1, 1, 2, 8)
    assert_round_trip(model, x, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [({"extra": "pool"}, "extra"), ({"upsample": "bilinear"}, "upsample"),
                                          ({"extra": "carafe_lateral"}, "needs upsample='carafe'"),
                                          ({"extra_source": "c5"}, "extra_source"),
                                          ({"min_level": 5, "max_level": 3}, "min_level")])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FPN(**kwargs)


def test_missing_input_level_is_a_clear_error():
    feats = _features(np.random.default_rng(4), (2, 4, 5), 16, 16)
    with pytest.raises(ValueError, match="contiguous"):
        FPN(min_level=2)(feats)


def test_backbone_fpn_train_step_and_serialization(tmp_path):
    images = keras.Input((None, None, 3))
    pyramid = FPN(out_channels=16, min_level=3, max_level=7, extra="conv")(
        {k: v for k, v in resnet(50, norm="bn", frozen_stages=1)(images).items() if k >= 3})
    model = keras.Model(images, pyramid)
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype("float32"))
    optimizer = keras.optimizers.Adam(1e-4)
    losses = []
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(tf.square(p - 1.0)) for p in model(x, training=True).values()])
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert_round_trip(model, x, tmp_path, rtol=1e-4, atol=1e-4)
    clone = FPN.from_config(FPN(norm="gn", extra="conv", max_level=7, min_level=3).get_config())
    assert clone.norm == {"type": "gn"} and clone.extra == "conv"


def test_real_carafe_upsampler_and_round_trip(tmp_path):
    from tfdet.layers import CARAFEUpsample
    images = keras.Input((None, None, 3))
    c = {2: keras.layers.Conv2D(8, 3, strides=4, padding="same")(images)}
    for lvl in (3, 4, 5):
        c[lvl] = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c[lvl - 1])
    fpn = FPN(out_channels=16, upsample="carafe")
    model = keras.Model(images, fpn(c))
    assert [type(u) for u in fpn.upsamplers] == [CARAFEUpsample] * 3
    x = np.random.default_rng(6).normal(size=(1, 68, 100, 3)).astype("float32")
    expected = model(x)
    assert tuple(expected[2].shape) == (1, 17, 25, 16) and tuple(expected[6].shape) == (1, 2, 2, 16)
    assert_round_trip(model, x, tmp_path, rtol=1e-5, atol=1e-5)
