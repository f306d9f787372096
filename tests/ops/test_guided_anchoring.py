import numpy as np
import pytest
import tensorflow as tf

from tfdet import losses
from tfdet.ops import guided_anchoring as ga
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.matching import MaxIoUMatcher

STRIDES = (4, 8, 16, 32, 64)
SIZES = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]  # a 128 x 128 image


def _targets(boxes, valid=None):
    boxes = np.asarray(boxes, np.float32)[None]
    valid = np.ones(boxes.shape[:2], bool) if valid is None else np.asarray(valid)[None]
    out = ga.ga_loc_targets(boxes, valid, SIZES, STRIDES)
    return [t.numpy()[0] for t in out.targets], [w.numpy()[0] for w in out.weights], float(out.avg_factor)


def test_location_targets_hand_placed_box():
    # 64 x 64 box: scale 64, log2(64 / (8 * 4)) + 0.5 = 1.5 -> level 1 (stride 8).
    # Level 1 (box / 8 = 4..12): centre round(0.6*4 + 0.4*12)=7 .. round(0.4*4 + 0.6*12)=9,
    #   ignore round(0.75*4 + 0.25*12)=6 .. 10.  Level 0 (8..24): ignore 12..20.  Level 2 (2..6): ignore 3..5.
    targets, weights, avg = _targets([[32, 32, 96, 96]])
    expected_t = [np.zeros(s, np.float32) for s in SIZES]
    expected_w = [np.full(s, 0.1, np.float32) for s in SIZES]
    expected_t[1][7:10, 7:10] = 1
    expected_w[1][6:11, 6:11] = 0
    expected_w[1][7:10, 7:10] = 1
    expected_w[0][12:21, 12:21] = 0
    expected_w[2][3:6, 3:6] = 0
    for level in range(5):
        np.testing.assert_array_equal(targets[level], expected_t[level], err_msg=f"level {level}")
        np.testing.assert_allclose(weights[level], expected_w[level], err_msg=f"level {level}")
    assert avg == pytest.approx((32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2) / 200)


def test_location_targets_small_box_level0_and_clamping():
    # 20 x 12 box at the corner: scale sqrt(240) ~ 15.5 -> floor(log2(15.5/32) + 0.5) = -1 -> level 0.
    # Level 0 (box / 4 = 0, 0, 5, 3): centre x round(0.4*5)=2..round(0.6*5)=3, y round(1.2)=1..round(1.8)=2;
    # ignore x round(1.25)=1..round(3.75)=4, y round(0.75)=1..round(2.25)=2.  Level 1 (0,0,2.5,1.5):
    # ignore x round(0.625)=1..round(1.875)=2, y round(0.375)=0..round(1.125)=1.  No level below 0.
    targets, weights, _ = _targets([[0, 0, 20, 12]])
    t0 = np.zeros(SIZES[0], np.float32)
    t0[1:3, 2:4] = 1
    w0 = np.full(SIZES[0], 0.1, np.float32)
    w0[1:3, 1:5] = 0
    w0[1:3, 2:4] = 1
    w1 = np.full(SIZES[1], 0.1, np.float32)
    w1[0:2, 1:3] = 0
    np.testing.assert_array_equal(targets[0], t0)
    np.testing.assert_allclose(weights[0], w0)
    np.testing.assert_allclose(weights[1], w1)
    for level in (2, 3, 4):
        np.testing.assert_allclose(weights[level], 0.1)
        assert targets[level].sum() == 0


def test_location_targets_padding_and_clamped_regions():
    # A padding gt changes nothing. A 256-box (scale 256: log2(256 / 32) + 0.5 = 3.5 -> level 3, stride
    # 32) sticks out of the 128-image: its centre cells 3..5 are clamped to the map (only cell 3 exists).
    targets, weights, _ = _targets([[0, 0, 256, 256], [10, 10, 40, 40]], valid=[True, False])
    expected = np.zeros(SIZES[3], np.float32)
    expected[3, 3] = 1
    np.testing.assert_array_equal(targets[3], expected)
    assert sum(t.sum() for t in targets[:3]) + targets[4].sum() == 0
    np.testing.assert_allclose(weights[0], 0.1)
    np.testing.assert_allclose(weights[1], 0.1)
    assert (weights[2] == 0).any() and (weights[4] == 0).any()  # adjacent-level ignore


def test_assign_levels():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 45, 45], [0, 0, 46, 46], [0, 0, 1000, 1000], [0, 0, 0, 0]]],
                     np.float32)
    # thresholds at 32 * 2^(k - 0.5): 22.6, 45.25, 90.5, ...
    np.testing.assert_array_equal(ga.assign_levels(boxes, STRIDES).numpy(), [[0, 0, 1, 4, 0]])


def _np_region(box, ratio, stride, size):
    b = np.asarray(box, np.float64) / stride
    e = (1 - ratio) / 2
    x1, y1 = np.round((1 - e) * b[0] + e * b[2]), np.round((1 - e) * b[1] + e * b[3])
    x2, y2 = np.round(e * b[0] + (1 - e) * b[2]), np.round(e * b[1] + (1 - e) * b[3])
    h, w = size
    return [int(np.clip(v, 0, m)) for v, m in ((x1, w), (y1, h), (x2, w), (y2, h))]


def _np_loc_targets(boxes):
    """mmdetection's loop, with the same-level ignore regions written before the centres (centre wins)."""
    targets = [np.zeros(s) for s in SIZES]
    weights = [np.full(s, -1.0) for s in SIZES]
    ignore = [np.zeros(s, bool) for s in SIZES]
    levels = []
    for box in boxes:
        scale = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        levels.append(int(np.clip(np.floor(np.log2(scale) - np.log2(8 * STRIDES[0]) + 0.5), 0, 4)))
    for box, lvl in zip(boxes, levels):
        x1, y1, x2, y2 = _np_region(box, 0.5, STRIDES[lvl], SIZES[lvl])
        weights[lvl][y1:y2 + 1, x1:x2 + 1] = 0
        for other in (lvl - 1, lvl + 1):
            if 0 <= other < 5:
                x1, y1, x2, y2 = _np_region(box, 0.5, STRIDES[other], SIZES[other])
                ignore[other][y1:y2 + 1, x1:x2 + 1] = True
    for box, lvl in zip(boxes, levels):
        x1, y1, x2, y2 = _np_region(box, 0.2, STRIDES[lvl], SIZES[lvl])
        targets[lvl][y1:y2 + 1, x1:x2 + 1] = 1
        weights[lvl][y1:y2 + 1, x1:x2 + 1] = 1
    for w, ig in zip(weights, ignore):
        w[(w < 0) & ig] = 0
        w[w < 0] = 0.1
    return targets, weights


def test_location_targets_random_boxes_vs_numpy():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (7, 2))
    wh = np.exp(rng.uniform(np.log(6), np.log(120), (7, 2)))
    boxes = np.concatenate([xy, np.minimum(xy + wh, 128)], 1).astype(np.float32)
    targets, weights, _ = _targets(boxes)
    ref_t, ref_w = _np_loc_targets(boxes)
    for level in range(5):
        np.testing.assert_array_equal(targets[level], ref_t[level])
        np.testing.assert_allclose(weights[level], ref_w[level])


def _np_iou(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-6)


def _approxes(strides=(8, 16), sizes=((6, 6), (3, 3))):
    gen = AnchorGenerator(strides, octave_base_scale=8, scales_per_octave=3)
    return tf.concat([tf.reshape(a, [-1, 9, 4]) for a in gen(list(sizes))], 0)


def test_approx_shape_targets_vs_numpy():
    approxes = _approxes()
    num = approxes.shape[0]
    gt = np.array([[[8, 10, 70, 40], [20, 20, 44, 44], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[0, 2, -1]])
    valid = np.ones([1, num], bool)
    valid[0, 5] = False
    matcher = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)
    out = ga.approx_shape_targets(approxes, gt, classes, valid, matcher, num_samples=None)

    a = approxes.numpy()
    iou = _np_iou(a.reshape(-1, 4), gt[0, :2]).reshape(num, 9, 2).max(1)
    iou[~valid[0]] = 0
    matched = np.where(iou.max(1) >= 0.7, iou.argmax(1), -1)
    for g in range(2):  # low-quality matches, later gts overwrite
        if iou[:, g].max() >= 0.3:
            matched[iou[:, g] == iou[:, g].max()] = g
    matched[~valid[0]] = -1
    assert (matched >= 0).sum() >= 2
    np.testing.assert_array_equal(out.weights.numpy()[0], (matched >= 0).astype(np.float32))
    pos = matched >= 0
    np.testing.assert_allclose(out.gt_boxes.numpy()[0][pos], gt[0][matched[pos]])
    assert float(out.avg_factor) == pos.sum()


def test_approx_shape_targets_sampled_and_empty():
    approxes = _approxes()
    gt = np.zeros([2, 1, 4], np.float32)
    gt[0, 0] = [8, 10, 70, 40]
    classes = np.array([[1], [-1]])
    out = ga.approx_shape_targets(approxes, gt, classes, np.ones([2, approxes.shape[0]], bool),
                                  MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3), num_samples=8, seed=[1, 2])
    assert out.weights.numpy()[1].sum() == 0 and out.weights.numpy()[0].sum() >= 1
    assert float(out.avg_factor) == 16  # 8 samples per image, all filled
    none = ga.approx_shape_targets(approxes, np.zeros([1, 0, 4], np.float32), np.zeros([1, 0], np.int32),
                                   np.ones([1, approxes.shape[0]], bool), MaxIoUMatcher(0.7, 0.3), num_samples=None)
    assert none.weights.numpy().sum() == 0 and float(none.avg_factor) == 1.0


def _np_bounded_iou(pred, target, beta=0.2, eps=1e-3):
    pc, pw = (pred[:, :2] + pred[:, 2:]) / 2, pred[:, 2:] - pred[:, :2]
    tc, tw = (target[:, :2] + target[:, 2:]) / 2, target[:, 2:] - target[:, :2]
    d = np.abs(tc - pc)
    lxy = 1 - np.maximum((tw - 2 * d) / (tw + 2 * d + eps), 0)
    lwh = 1 - np.minimum(tw / (pw + eps), pw / (tw + eps))
    l = np.concatenate([lxy, lwh], 1)  # noqa: E741
    return np.where(l < beta, 0.5 * l * l / beta, l - 0.5 * beta)


def test_bounded_iou_loss_vs_numpy_and_gradient():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (12, 2))
    pred = np.concatenate([xy, xy + rng.uniform(2, 40, (12, 2))], 1)
    target = np.concatenate([xy + rng.uniform(-5, 5, (12, 2)), xy + rng.uniform(2, 40, (12, 2))], 1)
    target[:, 2:] = np.maximum(target[:, 2:], target[:, :2] + 1)
    target[0] = pred[0]  # identical boxes: zero loss
    target[1] = pred[1] + [100, 100, 100, 100]  # disjoint: l_x = l_y = 1
    ref = _np_bounded_iou(pred, target)
    got = losses.bounded_iou_loss(tf.constant(pred), tf.constant(target), reduction="none").numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    assert ref[0].max() < 1e-3 and ref[1, 0] == pytest.approx(0.9)
    weights = rng.uniform(0, 1, (12,))
    mean = losses.bounded_iou_loss(pred, target, weights=weights, avg_factor=7.0)
    assert float(mean) == pytest.approx((ref * weights[:, None]).sum() / 7.0, rel=1e-5)

    def f(p):
        return losses.bounded_iou_loss(p, tf.constant(target[2:]), reduction="sum")

    theo, num = tf.test.compute_gradient(f, [tf.constant(pred[2:], tf.float64)], delta=1e-4)
    np.testing.assert_allclose(theo[0], num[0], rtol=1e-3, atol=1e-5)


def test_guided_anchors_and_shape_loss_gradient():
    squares = tf.constant([[0.0, 0.0, 32.0, 32.0], [16.0, 16.0, 80.0, 80.0]])
    shape = tf.constant([[[0.0, 0.0], [np.log(2) / 0.14, -np.log(2) / 0.14]]])
    anchors = ga.guided_anchors(shape, squares).numpy()[0]
    np.testing.assert_allclose(anchors[0], [0, 0, 32, 32], atol=1e-5)
    np.testing.assert_allclose(anchors[1], [-16, 32, 112, 64], atol=1e-4)  # w 128, h 32 about (48, 48)
    targets = ga.ShapeTargets(tf.constant([[[0.0, 4.0, 32.0, 24.0], [0.0, 0.0, 0.0, 0.0]]]),
                              tf.constant([[1.0, 0.0]]), tf.constant(1.0))
    var = tf.Variable(tf.zeros([1, 2, 2]))
    with tf.GradientTape() as tape:
        loss = ga.shape_loss(var, squares, targets)
    grad = tape.gradient(loss, var).numpy()
    assert grad[0, 0, 1] > 0 and grad[0, 1].tolist() == [0.0, 0.0]  # shrink h toward 20; padding no gradient


def test_bad_inputs():
    with pytest.raises(ValueError, match="feature_sizes"):
        ga.ga_loc_targets(np.zeros([1, 1, 4], np.float32), np.ones([1, 1], bool), SIZES[:2], STRIDES)
    with pytest.raises(ValueError, match="center_ratio"):
        ga.ga_loc_targets(np.zeros([1, 1, 4], np.float32), np.ones([1, 1], bool), SIZES, STRIDES, center_ratio=0.6)


def _np_approxes(strides, sizes, octave_base_scale=8.0):
    """[N, 9, 4] approxes written from the definition: per location (x s, y s), sides s * scale / sqrt(r)
    by s * scale * sqrt(r) for scale octave_base_scale * 2^(i / 3) and r (h / w) in (0.5, 1, 2)."""
    out = []
    for s, (h, w) in zip(strides, sizes):
        ys, xs = np.meshgrid(np.arange(h) * s, np.arange(w) * s, indexing="ij")
        ctr = np.stack([xs.ravel(), ys.ravel()], 1)[:, None, :].astype(np.float64)
        half = np.array([[s * k / np.sqrt(r) / 2, s * k * np.sqrt(r) / 2] for r in (0.5, 1, 2)
                         for k in octave_base_scale * 2.0 ** (np.arange(3) / 3)])[None]
        out.append(np.concatenate([ctr - half, ctr + half], -1))
    return np.concatenate(out, 0)


@pytest.mark.parametrize("side", [16.0, 20.0, 24.0, 28.0])
def test_shape_targets_of_small_boxes_live_on_p2(side):
    """The shapes data's small objects (20-32 px on a 160-px image, P2-P5): every one gets location targets on
    P2; its shape targets are P2 locations too, matched to the gt itself. A side-s box inside the 32-px square
    of a location has approx IoU s^2 / 32^2 (the 32 x 32 approx contains it, no other approx does better);
    below min_pos_iou 0.3 (s < 17.5 px) a gt gets no shape target at all, as in mmdetection."""
    strides, sizes = (4, 8, 16, 32), [(40, 40), (20, 20), (10, 10), (5, 5)]
    x1, y1 = 61.3, 47.9
    gt = np.array([[[x1, y1, x1 + side, y1 + side]]], np.float32)
    assert int(ga.assign_levels(gt, strides)[0, 0]) == 0
    loc = ga.ga_loc_targets(gt, np.ones([1, 1], bool), sizes, strides)
    assert loc.targets[0].numpy().sum() >= 1 and sum(t.numpy().sum() for t in loc.targets[1:]) == 0

    approxes = _np_approxes(strides, sizes)
    num = approxes.shape[0]
    out = ga.approx_shape_targets(approxes, gt, np.zeros([1, 1], np.int32), np.ones([1, num], bool),
                                  MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3), num_samples=None)
    iou = _np_iou(approxes.reshape(-1, 4), gt[0]).reshape(num, 9).max(1)
    pos = out.weights.numpy()[0] > 0
    best = side ** 2 / 32.0 ** 2
    assert iou.max() == pytest.approx(best, rel=1e-5)
    if best < 0.3:
        assert not pos.any()
        return
    # locations whose 32-px square contains the box reach exactly the best IoU
    ctr = approxes[:, 3, :2] + 16.0  # approx 3 (ratio 1, scale 8) is the square
    inside = ((ctr[:, 0] - 16 <= x1) & (x1 + side <= ctr[:, 0] + 16)
              & (ctr[:, 1] - 16 <= y1) & (y1 + side <= ctr[:, 1] + 16))
    inside[1600:] = False  # P2's 1600 locations come first; the others' approx 3 is no 32-px square
    assert inside.sum() >= 1 and (np.abs(iou[inside] - best) < 1e-5).all()
    expected = (iou >= 0.7) | (np.abs(iou - iou.max()) < 1e-6)
    np.testing.assert_array_equal(pos, expected)
    assert pos[inside].all() and pos[1600:].sum() == 0  # P2 only
    np.testing.assert_allclose(out.gt_boxes.numpy()[0][pos], np.repeat(gt[0], pos.sum(), 0))
