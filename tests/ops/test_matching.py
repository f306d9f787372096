"""MaxIoUMatcher against a loop-by-loop NumPy transcription of mmdetection's MaxIoUAssigner."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.matching import MaxIoUMatcher
from tests.ops.test_box_ops import np_iou, random_boxes


def np_assign(boxes, gts, pos_thr, neg_thr, min_pos_iou, low_quality, assign_all, crowd=None, iof_thr=-1.0,
              valid=None):
    """mmdetection MaxIoUAssigner.assign on one image, unpadded: returns (labels, gt index or -1).

    `valid` selects the boxes taking part (mmdetection drops the others before assigning)."""
    n = len(boxes)
    valid = np.ones(n, bool) if valid is None else valid
    labels, matched = -np.ones(n, int), -np.ones(n, int)
    idx = np.nonzero(valid)[0]
    sub = boxes[idx]
    assigned = -np.ones(len(sub), int)  # mmdetection's assigned_gt_inds - 1 convention: -1 ignore, -2 neg
    if len(gts) == 0:
        labels[idx] = 0
        return labels, matched
    overlaps = np_iou(gts, sub)  # [G, n]
    if iof_thr > 0 and crowd is not None and len(crowd):
        ign = np_iou(sub, crowd, mode="iof").max(axis=1)
        overlaps[:, ign > iof_thr] = -1
    max_ov, arg = overlaps.max(axis=0), overlaps.argmax(axis=0)
    gt_max, gt_arg = overlaps.max(axis=1), overlaps.argmax(axis=1)
    lo, hi = neg_thr if isinstance(neg_thr, tuple) else (0.0, neg_thr)
    assigned[(max_ov >= lo) & (max_ov < hi)] = -2
    pos = max_ov >= pos_thr
    assigned[pos] = arg[pos]
    if low_quality:
        for i in range(len(gts)):
            if gt_max[i] >= min_pos_iou:
                if assign_all:
                    assigned[overlaps[i] == gt_max[i]] = i
                else:
                    assigned[gt_arg[i]] = i
    labels[idx] = np.where(assigned >= 0, 1, np.where(assigned == -2, 0, -1))
    matched[idx] = np.where(assigned >= 0, assigned, -1)
    return labels, matched


def run(matcher, boxes, gts, classes, crowd=None, valid=None):
    out = matcher(tf.constant(boxes, tf.float32), tf.constant(gts, tf.float32), tf.constant(classes, tf.int32),
                  None if crowd is None else tf.constant(crowd), None if valid is None else tf.constant(valid))
    return out.labels.numpy(), out.matched_gt.numpy(), out.max_iou.numpy()


def test_hand_computed():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 4], [50, 50, 60, 60], [52, 50, 62, 60]]], float)
    gts = np.array([[[0, 0, 10, 10], [51, 50, 61, 60], [0, 0, 0, 0]]], float)
    classes = np.array([[3, 7, -1]])
    labels, matched, max_iou = run(MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3), boxes, gts, classes)
    # IoUs with gt0: 1, 0.8, 0.4; boxes 3, 4 have IoU 9/11 with gt1.
    np.testing.assert_array_equal(labels[0], [1, 1, -1, 1, 1])
    np.testing.assert_array_equal(matched[0], [0, 0, -1, 1, 1])
    np.testing.assert_allclose(max_iou[0], [1.0, 0.8, 0.4, 9 / 11, 9 / 11], rtol=1e-6)
    # R-CNN at 0.85 without low-quality matches: only the exact box is positive.
    labels, matched, _ = run(MaxIoUMatcher(0.85, 0.5, match_low_quality=False), boxes, gts, classes)
    np.testing.assert_array_equal(labels[0], [1, -1, 0, -1, -1])
    # With low-quality matches the two tied boxes of gt1 both match it (gt_max_assign_all) ...
    labels, matched, _ = run(MaxIoUMatcher(0.85, 0.5, min_pos_iou=0.5), boxes, gts, classes)
    np.testing.assert_array_equal(labels[0], [1, -1, 0, 1, 1])
    # ... or only the first one.
    labels, matched, _ = run(MaxIoUMatcher(0.85, 0.5, min_pos_iou=0.5, gt_max_assign_all=False), boxes, gts, classes)
    np.testing.assert_array_equal(labels[0], [1, -1, 0, 1, -1])


def test_later_gt_wins_a_shared_low_quality_box():
    boxes = np.array([[[0, 0, 10, 10], [100, 100, 110, 110]]], float)
    gts = np.array([[[0, 0, 20, 10], [0, 0, 10, 20]]], float)  # both have IoU 0.5 with box 0 only
    labels, matched, _ = run(MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3), boxes, gts, [[1, 2]])
    np.testing.assert_array_equal(labels[0], [1, 0])
    np.testing.assert_array_equal(matched[0], [1, -1])


PRESETS = [
    dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
    dict(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.4), min_pos_iou=0.2, gt_max_assign_all=False),
]


@pytest.mark.parametrize("config", PRESETS)
def test_random_batches_match_numpy(config):
    rng = np.random.default_rng(4)
    batch, n, g = 3, 40, 6
    boxes = np.stack([random_boxes(rng, n, 60) for _ in range(batch)])
    boxes[:, ::7] = boxes[:, 1::7]  # duplicates create exact IoU ties
    gts = np.stack([random_boxes(rng, g, 60) for _ in range(batch)])
    classes = rng.integers(0, 5, (batch, g))
    classes[1, 4:] = -1  # padding
    classes[2, :] = -1  # an image without objects
    gts[classes < 0] = 0.0
    valid = rng.uniform(size=(batch, n)) > 0.2
    labels, matched, _ = run(MaxIoUMatcher(**config), boxes, gts, classes, valid=valid)
    for b in range(batch):
        keep = classes[b] >= 0
        want_labels, want_matched = np_assign(
            boxes[b], gts[b][keep], config["pos_iou_thr"], config["neg_iou_thr"], config["min_pos_iou"],
            config.get("match_low_quality", True), config.get("gt_max_assign_all", True), valid=valid[b])
        np.testing.assert_array_equal(labels[b], want_labels)
        real = np.append(np.nonzero(keep)[0], -1)  # maps the unpadded gt index back; -1 stays -1
        np.testing.assert_array_equal(matched[b], real[want_matched])
    assert (labels[2] != 1).all() and (labels[2][valid[2]] == 0).all()


def test_crowd_regions_are_ignored_not_matched():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 50, 60)[None]
    gts = np.concatenate([random_boxes(rng, 3, 60), [[0, 0, 30, 30]]])[None]
    crowd = np.array([[False, False, False, True]])
    config = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    labels, matched, _ = run(MaxIoUMatcher(ignore_iof_thr=0.5, **config), boxes, gts, [[1, 2, 3, 4]], crowd=crowd)
    want, want_m = np_assign(boxes[0], gts[0, :3], 0.5, 0.4, 0.0, True, True, crowd=gts[0, 3:], iof_thr=0.5)
    np.testing.assert_array_equal(labels[0], want)
    np.testing.assert_array_equal(matched[0], want_m)
    assert (matched != 3).all()
    assert (labels[0][np_iou(boxes[0], gts[0, 3:], "iof")[:, 0] > 0.5] == -1).all()


def test_shared_anchors_graph_mode_and_empty_gt():
    matcher = MaxIoUMatcher(0.7, 0.3, min_pos_iou=0.3)
    fn = tf.function(matcher.__call__)
    anchors = random_boxes(np.random.default_rng(6), 10, 60).astype(np.float32)
    out = fn(anchors, tf.zeros([2, 0, 4]), tf.zeros([2, 0], tf.int32))
    np.testing.assert_array_equal(out.labels.numpy(), np.zeros((2, 10)))
    np.testing.assert_array_equal(out.matched_gt.numpy(), -np.ones((2, 10)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="neg_iou_thr"):
        MaxIoUMatcher(0.5, 0.6)
    with pytest.raises(ValueError, match="gt_boxes"):
        MaxIoUMatcher(0.5, 0.4)(tf.zeros([3, 4]), tf.zeros([3, 4]), tf.zeros([3], tf.int32))


def test_xla_compiles_and_agrees():
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 30, 60).astype(np.float32)
    gts = np.stack([random_boxes(rng, 4, 60) for _ in range(2)]).astype(np.float32)
    classes = np.array([[1, 2, -1, -1], [0, 0, 0, 0]], np.int32)
    matcher = MaxIoUMatcher(0.5, 0.4, min_pos_iou=0.0)
    eager = matcher(boxes, gts, classes)
    compiled = tf.function(matcher.__call__, jit_compile=True)(boxes, gts, classes)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a, b)
