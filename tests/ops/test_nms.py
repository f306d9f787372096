"""NMS and Soft-NMS against NumPy versions written from the greedy algorithm and the Soft-NMS paper."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import nms
from tests.ops.test_box_ops import np_iou, random_boxes


def np_nms(boxes, scores, iou_thr, score_thr=-np.inf, max_out=None):
    """Greedy NMS: visit boxes by decreasing score, keep one unless it overlaps a kept one by > iou_thr."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= score_thr:
            continue
        if all(np_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= iou_thr for j in keep):
            keep.append(i)
    return keep[:max_out]


def np_soft_nms(boxes, scores, method, iou_thr, sigma, min_score, max_out, score_thr=-np.inf):
    """Soft-NMS, Algorithm 1 of Bodla et al.: select the max, decay the rest by f(IoU), drop < min_score."""
    s = scores.astype(np.float64).copy()
    remaining = [i for i in range(len(s)) if s[i] > score_thr and s[i] >= min_score]
    out = []
    while remaining and len(out) < max_out:
        m = max(remaining, key=lambda i: s[i])
        out.append((m, s[m]))
        remaining.remove(m)
        for i in list(remaining):
            iou = np_iou(boxes[m:m + 1], boxes[i:i + 1])[0, 0]
            if method == "linear":
                s[i] *= (1 - iou) if iou >= iou_thr else 1.0
            elif method == "gaussian":
                s[i] *= math.exp(-iou * iou / sigma)
            else:
                s[i] *= 0.0 if iou > iou_thr else 1.0
            if s[i] < min_score:
                remaining.remove(i)
    return out


def clustered(rng, batch, n, size=60.0):
    boxes = np.stack([random_boxes(rng, n, size) for _ in range(batch)]).astype(np.float32)
    scores = rng.permutation(batch * n).reshape(batch, n).astype(np.float32) / (batch * n)  # distinct
    return boxes, scores


def test_tf_threshold_semantics_hand_computed():
    # IoU exactly 0.5 is not suppressed at threshold 0.5; a score equal to score_threshold is dropped.
    boxes = [[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 10.0], [50.0, 50.0, 60.0, 60.0]]]
    out = nms.batched_nms(boxes, [[0.9, 0.8, 0.5]], 5, iou_threshold=0.5, score_threshold=0.5)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 1, -1, -1, -1]])
    out = nms.batched_nms(boxes, [[0.9, 0.8, 0.5]], 5, iou_threshold=0.49)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 2, -1, -1, -1]])
    np.testing.assert_allclose(out.scores.numpy(), [[0.9, 0.5, 0, 0, 0]])
    np.testing.assert_allclose(out.boxes.numpy()[0, 1], [50, 50, 60, 60])


@pytest.mark.parametrize("iou_thr,score_thr", [(0.5, -np.inf), (0.7, 0.3), (0.3, 0.0)])
def test_batched_nms_matches_numpy(iou_thr, score_thr):
    boxes, scores = clustered(np.random.default_rng(12), 3, 60)
    out = nms.batched_nms(boxes, scores, 20, iou_thr, score_thr)
    for b in range(3):
        keep = np_nms(boxes[b], scores[b], iou_thr, score_thr, 20)
        got = out.indices.numpy()[b]
        np.testing.assert_array_equal(got[:len(keep)], keep)
        assert (got[len(keep):] == -1).all() and out.valid.numpy()[b].sum() == len(keep)
        np.testing.assert_allclose(out.scores.numpy()[b, :len(keep)], scores[b, keep])


def test_batched_nms_groups_do_not_suppress_each_other():
    boxes, scores = clustered(np.random.default_rng(13), 2, 50)
    groups = np.random.default_rng(14).integers(0, 3, (2, 50))
    out = nms.batched_nms(boxes, scores, 50, 0.5, groups=groups)
    for b in range(2):
        keep = []
        for g in range(3):
            idx = np.nonzero(groups[b] == g)[0]
            keep += [idx[i] for i in np_nms(boxes[b][idx], scores[b][idx], 0.5)]
        keep = sorted(keep, key=lambda i: -scores[b, i])
        got = out.indices.numpy()[b]
        np.testing.assert_array_equal(got[:len(keep)], keep)


def test_soft_nms_hand_computed():
    boxes = [[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 10.0], [50.0, 50.0, 60.0, 60.0]]]
    scores = [[0.9, 0.8, 0.3]]
    out = nms.soft_nms(boxes, scores, 3, method="linear", iou_threshold=0.3)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 1, 2]])
    np.testing.assert_allclose(out.scores.numpy(), [[0.9, 0.4, 0.3]], rtol=1e-6)  # 0.8 * (1 - 0.5) = 0.4
    out = nms.soft_nms(boxes, scores, 3, method="gaussian", sigma=0.5)
    np.testing.assert_allclose(out.scores.numpy(), [[0.9, 0.8 * math.exp(-0.5), 0.3]], rtol=1e-6)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 1, 2]])
    # Without a decay below 0.3 the order changes: Gaussian with a small sigma pushes box 1 last.
    out = nms.soft_nms(boxes, scores, 3, method="gaussian", sigma=0.1)
    np.testing.assert_array_equal(out.indices.numpy(), [[0, 2, 1]])
    np.testing.assert_allclose(out.scores.numpy()[0, 2], 0.8 * math.exp(-2.5), rtol=1e-6)


@pytest.mark.parametrize("method,iou_thr,sigma", [("linear", 0.3, 0.5), ("gaussian", 0.0, 0.5), ("hard", 0.5, 0.5)])
def test_soft_nms_matches_numpy(method, iou_thr, sigma):
    boxes, scores = clustered(np.random.default_rng(15), 3, 40)
    out = nms.soft_nms(boxes, scores, 25, method=method, iou_threshold=iou_thr, sigma=sigma, min_score=0.05,
                       score_threshold=0.1)
    for b in range(3):
        want = np_soft_nms(boxes[b], scores[b], method, iou_thr, sigma, 0.05, 25, score_thr=0.1)
        n = len(want)
        np.testing.assert_array_equal(out.indices.numpy()[b, :n], [i for i, _ in want])
        np.testing.assert_allclose(out.scores.numpy()[b, :n], [s for _, s in want], rtol=1e-5)
        assert (out.indices.numpy()[b, n:] == -1).all() and (out.scores.numpy()[b, n:] == 0).all()


def test_soft_nms_hard_equals_batched_nms():
    boxes, scores = clustered(np.random.default_rng(16), 2, 50)
    a = nms.soft_nms(boxes, scores, 30, method="hard", iou_threshold=0.5, min_score=0.0)
    b = nms.batched_nms(boxes, scores, 30, 0.5)
    np.testing.assert_array_equal(a.indices.numpy(), b.indices.numpy())


def np_multiclass(boxes, scores, k, iou_thr, score_thr, method, sigma=0.5, min_score=1e-3):
    dets = []
    for c in range(scores.shape[1]):
        cb = boxes[:, c] if boxes.ndim == 3 else boxes
        if method == "hard":
            dets += [(scores[i, c], c, cb[i]) for i in np_nms(cb, scores[:, c], iou_thr, score_thr)]
        else:
            dets += [(s, c, cb[i]) for i, s in np_soft_nms(cb, scores[:, c], method, iou_thr, sigma, min_score, k,
                                                           score_thr)]
    return sorted(dets, key=lambda d: -d[0])[:k]


@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
@pytest.mark.parametrize("class_specific", [False, True])
def test_multiclass_nms_matches_numpy(method, class_specific):
    rng = np.random.default_rng(17)
    batch, n, c, k = 2, 30, 3, 12
    boxes = np.stack([random_boxes(rng, n * c, 60).reshape(n, c, 4) for _ in range(batch)]).astype(np.float32)
    if not class_specific:
        boxes = boxes[:, :, 0]
    scores = (rng.permutation(batch * n * c).reshape(batch, n, c) / (batch * n * c)).astype(np.float32)
    out = nms.multiclass_nms(boxes, scores, k, iou_threshold=0.5, score_threshold=0.2, method=method)
    for b in range(batch):
        want = np_multiclass(boxes[b], scores[b], k, 0.5, 0.2, method)
        n_valid = len(want)
        assert out.num_valid.numpy()[b] == n_valid
        np.testing.assert_allclose(out.scores.numpy()[b, :n_valid], [d[0] for d in want], rtol=1e-5)
        np.testing.assert_array_equal(out.classes.numpy()[b, :n_valid], [d[1] for d in want])
        np.testing.assert_allclose(out.boxes.numpy()[b, :n_valid], [d[2] for d in want], rtol=1e-6)
        assert (out.classes.numpy()[b, n_valid:] == -1).all() and (out.scores.numpy()[b, n_valid:] == 0).all()


def test_empty_inputs_and_graph_mode():
    empty_boxes, empty_scores = tf.zeros([2, 0, 4]), tf.zeros([2, 0])
    assert (nms.batched_nms(empty_boxes, empty_scores, 5, 0.5).indices.numpy() == -1).all()
    assert (nms.soft_nms(empty_boxes, empty_scores, 5).indices.numpy() == -1).all()
    for method in ("hard", "gaussian"):
        out = nms.multiclass_nms(tf.zeros([2, 0, 4]), tf.zeros([2, 0, 3]), 5, method=method)
        np.testing.assert_array_equal(out.num_valid.numpy(), [0, 0])
    fn = tf.function(lambda b, s: nms.multiclass_nms(b, s, 7, method="linear"),
                     input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 2])])
    boxes, scores = clustered(np.random.default_rng(18), 1, 20)
    out = fn(boxes, np.stack([scores, scores[:, ::-1]], -1))
    assert out.boxes.shape == (1, 7, 4) and out.classes.shape == (1, 7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        nms.soft_nms(tf.zeros([1, 2, 4]), tf.zeros([1, 2]), 2, method="cubic")
    with pytest.raises(ValueError, match="boxes"):
        nms.batched_nms(tf.zeros([2, 4]), tf.zeros([2]), 2, 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms.multiclass_nms(tf.zeros([1, 2, 4]), tf.zeros([1, 2]), 2)


def np_torchvision_level_candidates(scores, k, threshold):
    """torchvision RetinaNet.postprocess_detections' per-level selection for one image, written out."""
    flat = scores.reshape(-1)
    keep = np.nonzero(flat > threshold)[0]
    order = np.argsort(-flat[keep], kind="stable")[:k]
    index = keep[order]
    return index // scores.shape[1], index % scores.shape[1], flat[index]


@pytest.mark.parametrize("k,threshold", [(7, 0.5), (40, 0.05), (1000, 0.05), (5, float("-inf"))])
def test_top_candidates_equal_torchvision_selection(k, threshold):
    rng = np.random.default_rng(9)
    scores = rng.random((3, 10, 4)).astype(np.float32)
    scores[2] *= 0.1  # the third image has few scores above 0.05
    anchors, classes, top, valid = (t.numpy() for t in nms.top_candidates(scores, k, threshold))
    assert anchors.shape == (3, min(k, 40))
    for b in range(3):
        want_a, want_c, want_s = np_torchvision_level_candidates(scores[b], k, threshold)
        n = len(want_s)
        assert valid[b].sum() == n and valid[b, :n].all()
        np.testing.assert_array_equal(anchors[b, :n], want_a)
        np.testing.assert_array_equal(classes[b, :n], want_c)
        np.testing.assert_array_equal(top[b, :n], want_s)
        assert (classes[b, n:] == -1).all() and (top[b, n:] == 0).all()


def test_top_candidates_dynamic_shapes_and_bad_input():
    fn = tf.function(lambda s: nms.top_candidates(s, 3, 0.2), input_signature=[tf.TensorSpec([None, None, 2])])
    anchors, classes, top, valid = fn(tf.constant([[[0.1, 0.9], [0.3, 0.25], [0.05, 0.0]]]))
    np.testing.assert_array_equal(anchors.numpy(), [[0, 1, 1]])
    np.testing.assert_array_equal(classes.numpy(), [[1, 0, 1]])
    np.testing.assert_allclose(top.numpy(), [[0.9, 0.3, 0.25]])
    with pytest.raises(ValueError, match="must be \\[B, N, C\\]"):
        nms.top_candidates(tf.zeros([3, 4]), 2)
