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


# ------------------------------------------------------------------ torchvision's anchor conventions


def np_torchvision_anchors(sizes, ratios, feat_h, feat_w, image_h, image_w):
    """torchvision AnchorGenerator in float32 (anchor_utils.py): base anchors [-ws, -hs, ws, hs] / 2 with
    ws = w_ratio * size (ratios outer), rounded half to even; stride = image size // feature size."""
    f = np.float32
    h_ratios = np.sqrt(np.array(ratios, f))
    w_ratios = f(1) / h_ratios
    ws = (w_ratios[:, None] * np.array(sizes, f)[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * np.array(sizes, f)[None, :]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / f(2))  # np.round: half to even
    sy, sx = image_h // feat_h, image_w // feat_w
    ys, xs = np.meshgrid(np.arange(feat_h) * sy, np.arange(feat_w) * sx, indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(f)
    return (shifts + base[None]).reshape(-1, 4)


TV_RETINA_SIZES = [(s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512)]


@pytest.mark.parametrize("sizes", [[(32,), (64,), (128,), (256,), (512,)], TV_RETINA_SIZES])
def test_torchvision_sizes_rounding_and_image_strides(sizes):
    gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], sizes=sizes, round_base=True, strides_from_image=True)
    assert gen.num_anchors == 3 * len(sizes[0])
    image = (800, 1088)  # 800 / 32 = 25 rows at stride 32: 13 at "stride 64" (800 // 13 = 61), 7 at 128 (114)
    feats = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    got = gen(feats, image_size=image)
    for level, (h, w) in enumerate(feats):
        want = np_torchvision_anchors(sizes[level], gen.ratios, h, w, *image)
        np.testing.assert_array_equal(got[level].numpy(), want)
    assert gen.level_strides(3, feats[3], image) == (1088 // 17, 61)
    base = gen.base_anchors(0).numpy()
    assert np.array_equal(base, np.round(base)) and not np.array_equal(
        base, AnchorGenerator(strides=[8] * 5, sizes=sizes).base_anchors(0).numpy())


def test_torchvision_retina_octave_sizes_are_integers():
    """torchvision RetinaNet (v1 and v2) sizes are int(s * 2^(i/3)), not mmdetection's 4 * stride * 2^(i/3)."""
    assert TV_RETINA_SIZES[0] == (32, 40, 50) and TV_RETINA_SIZES[2] == (128, 161, 203)
    tv = AnchorGenerator(strides=[8], sizes=TV_RETINA_SIZES[:1]).base_anchors(0).numpy()
    mm = AnchorGenerator(strides=[8], octave_base_scale=4, scales_per_octave=3).base_anchors(0).numpy()
    np.testing.assert_array_equal(tv[3:6, 2] - tv[3:6, 0], [32, 40, 50])  # ratio 1 (ratios outer, sizes inner)
    np.testing.assert_allclose(mm[3:6, 2] - mm[3:6, 0], [32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], rtol=1e-6)


def test_strides_from_image_in_graph_and_errors():
    gen = AnchorGenerator(strides=[32, 64], sizes=[(32,), (64,)], round_base=True, strides_from_image=True)

    @tf.function(input_signature=[tf.TensorSpec([2], tf.int32)])
    def fn(image_size):
        h, w = image_size[0], image_size[1]
        return tf.concat(gen([((h + 31) // 32, (w + 31) // 32), ((h + 63) // 64, (w + 63) // 64)],
                             image_size=(h, w)), 0)

    got = fn(tf.constant([160, 224])).numpy()
    want = np.concatenate([np_torchvision_anchors((32,), gen.ratios, 5, 7, 160, 224),
                           np_torchvision_anchors((64,), gen.ratios, 3, 4, 160, 224)])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="needs the padded image_size"):
        gen([(5, 7), (3, 4)])
    with pytest.raises(ValueError, match="replaces scales"):
        AnchorGenerator(strides=[8], sizes=[(32,)], scales=[4])
    with pytest.raises(ValueError, match="equally long tuple per level"):
        AnchorGenerator(strides=[8, 16], sizes=[(32,), (64, 80)])


@pytest.mark.parametrize("model", ["maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2"])
def test_torchvision_fixture_anchors(model):
    """The anchors torchvision itself produced (tests/zoo/fixtures/torchvision) are reproduced exactly."""
    from tests.zoo import fixtures_io

    meta, arrays = fixtures_io.load("torchvision", model)
    levels = meta["levels"]
    first = int(levels[0][1:])
    sizes = TV_RETINA_SIZES if model.startswith("retinanet") else [(32,), (64,), (128,), (256,), (512,)]
    gen = AnchorGenerator(strides=[2 ** (first + i) for i in range(len(levels))], sizes=sizes, round_base=True,
                          strides_from_image=True)
    image = tuple(int(v) for v in arrays["input/padded_size"])
    feats = [(image[0] // 2 ** first, image[1] // 2 ** first)]  # the padded size is a multiple of 32
    while len(feats) < len(levels):  # P6 / P7: stride-2 pooling or conv, ceil(n / 2)
        feats.append(((feats[-1][0] + 1) // 2, (feats[-1][1] + 1) // 2))
    for level, anchors in zip(levels, gen(feats, image_size=image)):
        fixtures_io.assert_stage(arrays, f"stage/anchors/{level}", anchors.numpy(), rtol=0, atol=0)
