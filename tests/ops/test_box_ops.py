"""box_ops against NumPy references written from the formulas and a few hand-computed values."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import box_ops


def np_iou(a, b, mode="iou"):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            inter = iw * ih
            area_p = max(p[2] - p[0], 0) * max(p[3] - p[1], 0)
            area_q = max(q[2] - q[0], 0) * max(q[3] - q[1], 0)
            denom = area_p if mode == "iof" else area_p + area_q - inter
            out[i, j] = inter / max(denom, 1e-6)
    return out


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_conversions_hand_computed():
    box = np.array([[10.0, 20.0, 40.0, 60.0]])
    np.testing.assert_allclose(box_ops.xyxy_to_xywh(box), [[10, 20, 30, 40]])
    np.testing.assert_allclose(box_ops.xyxy_to_cxcywh(box), [[25, 40, 30, 40]])
    np.testing.assert_allclose(box_ops.xywh_to_xyxy([[10.0, 20.0, 30.0, 40.0]]), box)
    np.testing.assert_allclose(box_ops.cxcywh_to_xyxy([[25.0, 40.0, 30.0, 40.0]]), box)
    np.testing.assert_allclose(box_ops.box_area(box), [1200.0])


def test_conversions_round_trip_batched():
    boxes = random_boxes(np.random.default_rng(0), 12).reshape(3, 4, 4)
    np.testing.assert_allclose(box_ops.xywh_to_xyxy(box_ops.xyxy_to_xywh(boxes)), boxes, rtol=1e-6)
    np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(box_ops.xyxy_to_cxcywh(boxes)), boxes, rtol=1e-6)


def test_clip_boxes_scalar_and_per_image():
    boxes = np.array([[[-5.0, -5.0, 50.0, 50.0], [10.0, 10.0, 200.0, 30.0]],
                      [[-5.0, -5.0, 50.0, 50.0], [10.0, 10.0, 200.0, 30.0]]])
    out = box_ops.clip_boxes(boxes, (40, 100)).numpy()
    np.testing.assert_allclose(out[0], [[0, 0, 50, 40], [10, 10, 100, 30]])
    out = box_ops.clip_boxes(boxes, [[40, 100], [20, 30]]).numpy()
    np.testing.assert_allclose(out[0], [[0, 0, 50, 40], [10, 10, 100, 30]])
    np.testing.assert_allclose(out[1], [[0, 0, 30, 20], [10, 10, 30, 20]])


def test_iou_hand_computed():
    a = [[0.0, 0.0, 10.0, 10.0]]
    b = [[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 5.0, 10.0]]
    np.testing.assert_allclose(box_ops.pairwise_iou(a, b), [[25 / 175, 1.0, 0.0, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.pairwise_iou(b, a, mode="iof")[:, 0], [0.25, 1.0, 0.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("mode", ["iou", "iof"])
def test_iou_batched_with_padding_matches_numpy(mode):
    rng = np.random.default_rng(1)
    a = np.stack([random_boxes(rng, 7) for _ in range(3)])
    b = np.stack([random_boxes(rng, 5) for _ in range(3)])
    b[1, 3:] = 0.0  # padding rows
    a[2, 5:] = 0.0
    got = box_ops.pairwise_iou(a, b, mode=mode).numpy()
    assert got.shape == (3, 7, 5)
    for i in range(3):
        np.testing.assert_allclose(got[i], np_iou(a[i], b[i], mode), rtol=1e-5, atol=1e-7)
    assert np.all(got[1, :, 3:] == 0.0) and np.all(got[2, 5:, :] == 0.0)


def test_iou_empty_and_bad_input():
    assert box_ops.pairwise_iou(np.zeros((2, 0, 4)), np.zeros((2, 3, 4))).shape == (2, 0, 3)
    with pytest.raises(ValueError, match="boxes2"):
        box_ops.pairwise_iou(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="mode"):
        box_ops.pairwise_iou(np.zeros((2, 4)), np.zeros((2, 4)), mode="giou")


def np_encode(g, p, means, stds):
    px, py = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gx, gy = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    d = np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)
    return (d - np.array(means)) / np.array(stds)


def np_decode(d, p, means, stds, clip):
    d = d * np.array(stds) + np.array(means)
    px, py = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    dw, dh = np.clip(d[:, 2], -clip, clip), np.clip(d[:, 3], -clip, clip)
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    gw, gh = pw * np.exp(dw), ph * np.exp(dh)
    return np.stack([gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2], axis=1)


RCNN = ((0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2))


def test_encode_hand_computed():
    anchor = [[0.0, 0.0, 10.0, 20.0]]  # centre (5, 10), size 10 x 20
    box = [[2.0, 4.0, 22.0, 24.0]]  # centre (12, 14), size 20 x 20
    want = [[0.7, 0.2, math.log(2.0), 0.0]]
    np.testing.assert_allclose(box_ops.encode_boxes(box, anchor), want, rtol=1e-6)
    np.testing.assert_allclose(box_ops.encode_boxes(box, anchor, *RCNN), np.array(want) / [0.1, 0.1, 0.2, 0.2],
                               rtol=1e-6)


@pytest.mark.parametrize("means,stds", [((0.0,) * 4, (1.0,) * 4), RCNN])
def test_encode_decode_match_numpy_and_round_trip(means, stds):
    rng = np.random.default_rng(2)
    anchors, boxes = random_boxes(rng, 20), random_boxes(rng, 20)
    deltas = box_ops.encode_boxes(tf.constant(boxes, tf.float64), anchors, means, stds).numpy()
    np.testing.assert_allclose(deltas, np_encode(boxes, anchors, means, stds), rtol=1e-10)
    back = box_ops.decode_boxes(deltas, anchors, means, stds).numpy()
    np.testing.assert_allclose(back, boxes, rtol=1e-9, atol=1e-9)
    noisy = rng.normal(0, 3, (20, 4))  # large dw/dh exercise the clamp
    got = box_ops.decode_boxes(tf.constant(noisy), anchors, means, stds).numpy()
    np.testing.assert_allclose(got, np_decode(noisy, anchors, means, stds, math.log(1000 / 16)), rtol=1e-10)


def test_decode_clamp_and_max_shape():
    anchor = [[0.0, 0.0, 16.0, 16.0]]
    out = box_ops.decode_boxes([[0.0, 0.0, 100.0, -100.0]], anchor).numpy()
    # dw clamped to log(1000/16): width 16 * 1000/16 = 1000; dh to -log(1000/16): height 16 * 16/1000.
    np.testing.assert_allclose(out, [[8 - 500, 8 - 0.128, 8 + 500, 8 + 0.128]], rtol=1e-5)
    clipped = box_ops.decode_boxes([[0.0, 0.0, 100.0, -100.0]], anchor, max_shape=(50, 60)).numpy()
    np.testing.assert_allclose(clipped, [[0, 8 - 0.128, 60, 8 + 0.128]], rtol=1e-5)


def test_encode_padding_rows_stay_finite():
    deltas = box_ops.encode_boxes(np.zeros((3, 4)), np.zeros((3, 4)))
    assert np.all(np.isfinite(deltas.numpy()))


def test_graph_mode_dynamic_shapes():
    fn = tf.function(lambda a, b: box_ops.pairwise_iou(a, b),
                     input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 4])])
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 4)[None], random_boxes(rng, 6)[None]
    np.testing.assert_allclose(fn(a.astype(np.float32), b.astype(np.float32))[0], np_iou(a[0], b[0]), rtol=1e-5)


def np_torchvision_decode(rel_codes, boxes, weights, clip=math.log(1000.0 / 16)):
    """torchvision BoxCoder.decode_single written out: codes / weights, dw and dh clamped from above only."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ctr_x, ctr_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = rel_codes[:, 0] / weights[0], rel_codes[:, 1] / weights[1]
    dw, dh = np.minimum(rel_codes[:, 2] / weights[2], clip), np.minimum(rel_codes[:, 3] / weights[3], clip)
    cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
    w, h = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_torchvision_box_coder(weights):
    rng = np.random.default_rng(4)
    anchors = random_boxes(rng, 50)
    codes = rng.normal(0, 1, (50, 4)) * np.array(weights) * 2.5  # |dw| beyond the clip both ways
    codes[:5, 2:] = -60.0 * np.array(weights[2:])  # far below -log(1000/16): only torchvision keeps these
    stds = tuple(1.0 / w for w in weights)
    got = box_ops.decode_boxes(tf.constant(codes), anchors, stds=stds, clip_below=False).numpy()
    np.testing.assert_allclose(got, np_torchvision_decode(codes, anchors, weights), rtol=1e-12, atol=1e-9)
    symmetric = box_ops.decode_boxes(tf.constant(codes), anchors, stds=stds).numpy()
    assert not np.allclose(symmetric[:5], got[:5])  # the default keeps mmdetection's two-sided clamp
    np.testing.assert_allclose(symmetric[5:][np.all(np.abs(codes[5:, 2:] / weights[2:]) < 4.0, axis=1)],
                               got[5:][np.all(np.abs(codes[5:, 2:] / weights[2:]) < 4.0, axis=1)], rtol=1e-12)


def test_large_enough():
    boxes = np.array([[0, 0, 1e-3, 5], [0, 0, 2e-3, 2e-3], [0, 0, 5, 0], [3, 3, 2, 8], [0, 0, 1, 1]], np.float32)
    np.testing.assert_array_equal(box_ops.large_enough(boxes, 1e-3), [False, True, False, False, True])
    np.testing.assert_array_equal(box_ops.large_enough(boxes, np.float32(1e-3), inclusive=True),
                                  [True, True, False, False, True])
    np.testing.assert_array_equal(box_ops.large_enough(boxes[None], 0.0).numpy().shape, (1, 5))
