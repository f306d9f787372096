"""MultiLevelRoIAlign: level assignment, pooling from the right level, serialization, errors."""

import numpy as np
import keras
import pytest
import tensorflow as tf

from tfdet.layers import MultiLevelRoIAlign
from tfdet.ops import fpn_levels, roi_align
from tests.keras_io import assert_round_trip


def test_fpn_levels_follow_the_fpn_formula():
    # sqrt(area) = 224 -> level 4; each halving of the side drops one level; clamped to [2, 5].
    sides = [10.0, 56.0, 111.9, 112.0, 223.9, 224.0, 447.9, 448.0, 2000.0]
    boxes = tf.constant([[0.0, 0.0, s, s] for s in sides])
    expected = [2, 2, 2, 3, 3, 4, 4, 5, 5]
    np.testing.assert_array_equal(fpn_levels(boxes, 2, 5).numpy(), expected)
    # Non-square: 112 x 448 has sqrt(area) 224.
    assert fpn_levels(tf.constant([[5.0, 5.0, 117.0, 453.0]]), 2, 5).numpy().tolist() == [4]
    # Degenerate boxes go to the lowest level.
    assert fpn_levels(tf.constant([[5.0, 5.0, 5.0, 50.0]]), 3, 6).numpy().tolist() == [3]


def _pyramid(batch=2, size=(96, 128), channels=3, levels=range(2, 6), seed=0):
    rng = np.random.default_rng(seed)
    return {lvl: tf.constant(rng.normal(size=(batch, size[0] >> lvl, size[1] >> lvl, channels)), tf.float32)
            for lvl in levels}


BOXES = np.array([
    [[0, 0, 20, 16], [10, 8, 120, 90], [30, 30, 90, 70], [0, 0, 0, 0]],  # last: padding
    [[4, 4, 60, 50], [0, 0, 128, 96], [50, 10, 52, 13], [70, 20, 127, 95]],
], np.float32)


@pytest.mark.parametrize("impl", ["fused", "composite"])
def test_each_box_is_pooled_from_its_level(impl):
    features = _pyramid()
    layer = MultiLevelRoIAlign(output_size=(3, 4), min_level=2, max_level=5, canonical_size=56.0, impl=impl)
    out = layer(features, BOXES)
    assert out.shape == (2, 4, 3, 4, 3)
    levels = fpn_levels(BOXES, 2, 5, canonical_size=56.0).numpy()
    assert len(set(levels.ravel())) >= 3  # the case really spans several levels
    for b in range(2):
        for k in range(4):
            lvl = int(levels[b, k])
            ref = roi_align(features[lvl], BOXES[b, k:k + 1], [b], (3, 4), spatial_scale=2.0 ** -lvl, impl="composite")
            np.testing.assert_allclose(out[b, k].numpy(), ref[0].numpy(), atol=1e-5)


def test_list_input_and_gradients_reach_every_used_level():
    features = _pyramid()
    maps = [features[lvl] for lvl in range(2, 6)]
    layer = MultiLevelRoIAlign(output_size=2, canonical_size=56.0)
    with tf.GradientTape() as tape:
        tape.watch(maps)
        loss = tf.reduce_sum(layer(maps, BOXES))
    grads = tape.gradient(loss, maps, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    used = set(fpn_levels(BOXES, 2, 5, canonical_size=56.0).numpy().ravel())
    for lvl, grad in zip(range(2, 6), grads):
        assert (np.abs(grad.numpy()).sum() > 0) == (lvl in used)


def test_round_trip_through_config_and_keras_file(tmp_path):
    features = _pyramid(batch=1, levels=range(3, 6))
    layer = MultiLevelRoIAlign(output_size=(2, 3), min_level=3, max_level=5, sampling_ratio=2, aligned=False)
    clone = MultiLevelRoIAlign.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(features, BOXES[:1]), layer(features, BOXES[:1]))

    # Keras stores dict inputs under string keys; the layer accepts "3" as well as 3.
    inputs = {str(lvl): keras.Input((96 >> lvl, 128 >> lvl, 3), name=f"p{lvl}") for lvl in range(3, 6)}
    features = {str(lvl): value for lvl, value in features.items()}
    boxes = keras.Input((4, 4), name="boxes")
    model = keras.Model([inputs, boxes], layer(inputs, boxes))
    loaded = assert_round_trip(model, [features, tf.constant(BOXES[:1])], tmp_path, rtol=0, atol=1e-6)
    assert loaded.layers[-1].get_config()["sampling_ratio"] == 2


def test_errors_name_the_problem():
    layer = MultiLevelRoIAlign(output_size=2)
    with pytest.raises(ValueError, match=r"lack levels \[5\]"):
        layer(_pyramid(levels=range(2, 5)), BOXES)
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        layer([tf.zeros([1, 8, 8, 1])] * 3, BOXES)
    with pytest.raises(ValueError, match=r"boxes must be \[B, K, 4\]"):
        layer(_pyramid(), BOXES[0])
    with pytest.raises(ValueError, match="min_level"):
        MultiLevelRoIAlign(min_level=5, max_level=3)
