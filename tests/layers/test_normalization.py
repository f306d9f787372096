"""FrozenBatchNormalization against the formula, keras BatchNormalization, training and serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdet  # noqa: F401
from tfdet.layers import FrozenBatchNormalization
from tests.keras_io import assert_round_trip


def _random_stats(rng, channels):
    return [rng.normal(size=channels).astype("float32"), rng.normal(size=channels).astype("float32"),
            rng.normal(size=channels).astype("float32"), rng.uniform(0.5, 2.0, size=channels).astype("float32")]


def _built(channels=5, **kwargs):
    layer = FrozenBatchNormalization(**kwargs)
    layer.build((None, 3, 4, channels))
    gamma, beta, mean, var = _random_stats(np.random.default_rng(0), channels)
    layer.set_weights([gamma, beta, mean, var])
    return layer, (gamma, beta, mean, var)


@pytest.mark.parametrize("training", [False, True])
def test_matches_formula_in_training_and_inference(training):
    layer, (gamma, beta, mean, var) = _built()
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype("float32")
    expected = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(layer(x, training=training).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_equals_keras_batch_norm_in_inference():
    layer, weights = _built()
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    bn.build((None, 3, 4, 5))
    bn.set_weights(list(weights))
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float32")
    np.testing.assert_allclose(layer(x).numpy(), bn(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_statistics_never_change_and_affine_follows_requires_grad(requires_grad):
    layer, (gamma, beta, mean, var) = _built(requires_grad=requires_grad)
    assert len(layer.trainable_weights) == (2 if requires_grad else 0)
    x = tf.constant(np.random.default_rng(3).normal(2.0, 3.0, size=(4, 3, 4, 5)).astype("float32"))
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        if layer.trainable_weights:
            optimizer.apply(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), var)
    changed = not np.array_equal(layer.gamma.numpy(), gamma)
    assert changed == requires_grad


def test_unknown_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="channel axis"):
        FrozenBatchNormalization().build((None, 3, 4, None))


def test_serialization_round_trip(tmp_path):
    layer, _ = _built(requires_grad=True, name="fbn")
    clone = FrozenBatchNormalization.from_config(layer.get_config())
    assert clone.requires_grad and clone.epsilon == layer.epsilon
    inputs = keras.Input((3, 4, 5))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 5)).astype("float32")
    loaded = assert_round_trip(model, x, tmp_path, rtol=1e-7, atol=0)
    assert isinstance(loaded.layers[-1], FrozenBatchNormalization)
