"""Anchors: exact coordinates vs a NumPy re-implementation of mmdetection's published formula."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.anchors import AnchorGenerator, anchors_inside


def np_anchors(stride, base_size, scales, ratios, feat_h, feat_w, center_offset=0.0):
    """mmdetection AnchorGenerator in float32: scale-major base anchors, then row-major grid shifts."""
    f = np.float32
    scales, ratios, base = np.array(scales, f), np.array(ratios, f), f(base_size)
    h_ratios = np.sqrt(ratios)
    w_ratios = f(1) / h_ratios
    ws = (base * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (base * h_ratios[:, None] * scales[None, :]).reshape(-1)
    c = f(center_offset) * base
    base_anchors = np.stack([c - f(0.5) * ws, c - f(0.5) * hs, c + f(0.5) * ws, c + f(0.5) * hs], axis=-1)
    out = []
    for y in range(feat_h):
        for x in range(feat_w):
            shift = np.array([x * stride, y * stride, x * stride, y * stride], f)
            out.extend(base_anchors + shift)
    return np.array(out, f).reshape(-1, 4)


def test_rpn_hand_computed():
    gen = AnchorGenerator(strides=[4, 8, 16, 32, 64], scales=[8], ratios=[0.5, 1.0, 2.0])
    assert gen.num_anchors == 3
    level0 = gen([(2, 3), (1, 2), (1, 1), (1, 1), (1, 1)])[0].numpy()
    assert level0.shape == (2 * 3 * 3, 4)
    r = math.sqrt(0.5)
    np.testing.assert_allclose(level0[0], [-16 / r, -16 * r, 16 / r, 16 * r], rtol=1e-6)  # ratio 0.5: wide
    np.testing.assert_allclose(level0[1], [-16, -16, 16, 16])
    np.testing.assert_allclose(level0[2], [-16 * r, -16 / r, 16 * r, 16 / r], rtol=1e-6)
    np.testing.assert_allclose(level0[4], [-12, -16, 20, 16])  # location (y=0, x=1), ratio 1
    np.testing.assert_allclose(level0[3 * 3 + 1], [-16, -12, 16, 20])  # location (y=1, x=0), ratio 1


def test_retinanet_octave_scales_hand_computed():
    gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], octave_base_scale=4, scales_per_octave=3)
    assert gen.num_anchors == 9
    np.testing.assert_allclose(gen.scales, [4, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)])
    base = gen.base_anchors(0).numpy()
    np.testing.assert_allclose(base[3], [-16, -16, 16, 16])  # ratio 1 (second), first scale
    half = 16 * 2 ** (1 / 3)
    np.testing.assert_allclose(base[4], [-half, -half, half, half], rtol=1e-6)
    np.testing.assert_allclose(gen.base_anchors(4).numpy()[3], [-256, -256, 256, 256])


@pytest.mark.parametrize("config", [
    dict(strides=[4, 8, 16, 32, 64], scales=[8], ratios=[0.5, 1.0, 2.0]),
    dict(strides=[8, 16, 32, 64, 128], octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0]),
    dict(strides=[8, 16], scales=[2, 3], ratios=[0.25, 1.0], base_sizes=[10, 20], center_offset=0.5),
])
def test_all_levels_match_numpy(config):
    gen = AnchorGenerator(**config)
    sizes = [(7 - i, 5 - i) for i in range(gen.num_levels)]
    got = gen(sizes)
    for level, (h, w) in enumerate(sizes):
        stride = gen.strides[level][0]
        want = np_anchors(stride, gen.base_sizes[level], gen.scales, gen.ratios, h, w, gen.center_offset)
        np.testing.assert_array_equal(got[level].numpy(), want)  # bit-exact in float32


def test_dynamic_feature_sizes_in_graph():
    gen = AnchorGenerator(strides=[4, 8], scales=[8])

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def fn(h, w):
        return tf.concat(gen([(h, w), ((h + 1) // 2, (w + 1) // 2)]), axis=0)

    got = fn(tf.constant(5), tf.constant(3)).numpy()
    want = np.concatenate([np_anchors(4, 4, [8], gen.ratios, 5, 3), np_anchors(8, 8, [8], gen.ratios, 3, 2)])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_valid_flags():
    gen = AnchorGenerator(strides=[4, 8], scales=[8])
    flags = gen.valid_flags([(4, 4), (2, 2)], [[16, 16], [9, 5]])
    f0 = flags[0].numpy().reshape(2, 4, 4, 3)
    assert f0[0].all()
    # image 1: ceil(9/4)=3 rows, ceil(5/4)=2 cols valid on level 0; ceil(9/8)=2, ceil(5/8)=1 on level 1.
    want = np.zeros((4, 4), bool)
    want[:3, :2] = True
    np.testing.assert_array_equal(f0[1], np.repeat(want[..., None], 3, -1))
    f1 = flags[1].numpy().reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(f1[1, :, :, 0], [[True, False], [True, False]])


def test_anchors_inside():
    anchors = np.array([[0, 0, 10, 10], [-1, 0, 10, 10], [0, 0, 20, 10], [5, 5, 19.5, 9]], np.float32)
    got = anchors_inside(anchors, [[20, 20], [10, 20]]).numpy()
    np.testing.assert_array_equal(got, [[True, False, False, True], [False, False, False, True]])
    got = anchors_inside(anchors, [[20, 20]], allowed_border=1).numpy()
    np.testing.assert_array_equal(got, [[True, True, True, True]])
    assert anchors_inside(anchors, [[1, 1], [1, 1]], allowed_border=-1).numpy().all()


def test_bad_config():
    with pytest.raises(ValueError, match="either scales"):
        AnchorGenerator(strides=[8], scales=[1], octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match="base_sizes"):
        AnchorGenerator(strides=[8, 16], scales=[1], base_sizes=[8])
    with pytest.raises(ValueError, match="feature_sizes"):
        AnchorGenerator(strides=[8, 16], scales=[1])([(4, 4)])
