"""RoI heads: box head targets, losses and inference vs NumPy; mask targets and pasting vs NumPy references
written from the conventions; keypoint targets, loss and decoding; layer serialization."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.ops.test_box_ops import np_decode, np_encode, np_iou
from tests.ops.test_nms import np_multiclass

from tfdet.modeling.roi_heads import bbox_head, keypoint_head, mask_head
from tfdet.ops.sampling import sample
from tests.keras_io import assert_round_trip

STDS = (0.1, 0.1, 0.2, 0.2)


def roundtrip(layer, inputs, tmp_path):
    """get_config/from_config and a .keras save/load of a model wrapping `layer` give the same outputs."""
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = keras.Input(inputs.shape[1:])
    model = keras.Model(x, layer(x))
    assert_round_trip(model, inputs, tmp_path)


def test_bbox_head_shapes_and_serialization(tmp_path):
    feats = tf.random.normal([2, 5, 7, 7, 8])
    head = bbox_head.BBoxHead(num_classes=4, fc_dim=32)
    cls_logits, deltas = head(feats)
    assert cls_logits.shape == (2, 5, 5) and deltas.shape == (2, 5, 16)
    agnostic = bbox_head.BBoxHead(num_classes=4, fc_dim=32, class_agnostic=True)
    assert agnostic(feats)[1].shape == (2, 5, 4)
    roundtrip(head, feats, tmp_path)


def gt_batch():
    gt_boxes = np.array([[[10, 10, 40, 40], [50, 20, 90, 60], [0, 0, 30, 30], [0, 0, 0, 0]],
                         [[0, 0, 0, 0]] * 4], np.float32)  # image 1 has no objects
    gt_classes = np.array([[2, 0, 1, -1], [-1] * 4], np.int32)
    crowd = np.array([[False, False, True, False], [False] * 4])
    return gt_boxes, gt_classes, crowd


def test_sample_rois_matches_a_direct_computation():
    rng = np.random.default_rng(40)
    gt_boxes, gt_classes, crowd = gt_batch()
    xy = rng.uniform(0, 70, (2, 40, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(5, 40, (2, 40, 2))], -1).astype(np.float32)
    proposals[0, :3] = [[11, 11, 41, 39], [52, 18, 88, 62], [1, 1, 29, 29]]  # near-copies of the gt
    valid = np.ones((2, 40), bool)
    valid[:, -5:] = False
    seed = tf.constant([5, 6])
    got = bbox_head.sample_rois(proposals, valid, gt_boxes, gt_classes, num_classes=3, gt_is_crowd=crowd,
                                num_samples=16, positive_fraction=0.25, seed=seed)
    # Recompute: boxes = proposals + non-crowd gt; IoU 0.5/0.5 on the non-crowd gt; the same sampler draw.
    usable = (gt_classes >= 0) & ~crowd
    boxes = np.concatenate([proposals, np.where(usable[..., None], gt_boxes, 0)], 1).astype(np.float64)
    box_valid = np.concatenate([valid, usable], 1)
    labels = np.full(box_valid.shape, -1)
    matched = np.full(box_valid.shape, -1)
    for b in range(2):
        iou = np_iou(boxes[b], gt_boxes[b].astype(np.float64)) * usable[b][None]
        best = iou.max(1) if usable[b].any() else np.zeros(len(boxes[b]))
        labels[b] = np.where(best >= 0.5, 1, 0)
        matched[b] = np.where(best >= 0.5, iou.argmax(1), -1)
    labels = np.where(box_valid, labels, -1)
    draw = sample(tf.constant(labels, tf.int32), 16, 0.25, seed=seed)
    idx, pos, ok = draw.indices.numpy(), draw.is_positive.numpy(), draw.valid.numpy()
    np.testing.assert_array_equal(got.is_positive, pos)
    np.testing.assert_array_equal(got.valid, ok)
    assert pos[0].sum() >= 3 and pos[1].sum() == 0 and ok[1].all()  # gt added; empty image: 16 negatives
    for b in range(2):
        for s in range(16):
            if not ok[b, s]:
                assert got.labels[b, s] == -1 and (got.rois[b, s] == 0).all()
                continue
            np.testing.assert_allclose(got.rois[b, s], boxes[b, idx[b, s]], rtol=1e-6)
            if pos[b, s]:
                g = matched[b, idx[b, s]]
                assert got.labels[b, s] == gt_classes[b, g] and got.matched_gt[b, s] == g
                want = np_encode(gt_boxes[b, g][None].astype(np.float64), boxes[b, idx[b, s]][None], (0,) * 4, STDS)
                np.testing.assert_allclose(got.box_targets[b, s], want[0], rtol=1e-4, atol=1e-5)
            else:
                assert got.labels[b, s] == 3 and got.matched_gt[b, s] == -1
    assert not np.isin(2, got.matched_gt.numpy())  # the crowd gt is never a target


def test_bbox_losses_match_numpy():
    rng = np.random.default_rng(41)
    c, s = 3, 8
    labels = np.array([[2, 0, 3, 3, 3, -1, -1, -1], [1, 3, 3, 3, 3, 3, 3, 3]], np.int32)
    positive = (labels >= 0) & (labels < c)
    targets = bbox_head.RoiTargets(rois=tf.zeros([2, s, 4]), labels=tf.constant(labels),
                                   matched_gt=tf.constant(np.where(positive, 0, -1)),
                                   box_targets=tf.constant(rng.normal(size=(2, s, 4)) * positive[..., None], tf.float32),
                                   is_positive=tf.constant(positive), valid=tf.constant(labels >= 0))
    logits = rng.normal(size=(2, s, c + 1)).astype(np.float32)
    deltas = rng.normal(size=(2, s, 4 * c)).astype(np.float32)
    got = bbox_head.bbox_losses(logits, deltas, targets, c)
    n = (labels >= 0).sum()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -sum(logp[b, i, labels[b, i]] for b in range(2) for i in range(s) if labels[b, i] >= 0)
    l1 = sum(np.abs(deltas[b, i].reshape(c, 4)[labels[b, i]] - targets.box_targets.numpy()[b, i]).sum()
             for b in range(2) for i in range(s) if positive[b, i])
    np.testing.assert_allclose(got["rcnn_cls"], ce / n, rtol=1e-5)
    np.testing.assert_allclose(got["rcnn_box"], l1 / n, rtol=1e-5)
    smooth = bbox_head.bbox_losses(logits, deltas, targets, c, loss_box="smooth_l1", beta=1.0)["rcnn_box"]
    assert 0 < float(smooth) < float(got["rcnn_box"])
    with pytest.raises(ValueError, match="loss_box"):
        bbox_head.bbox_losses(logits, deltas, targets, c, loss_box="iou")


@pytest.mark.parametrize("method", ["hard", "linear"])
def test_bbox_detections_match_numpy_pipeline(method):
    rng = np.random.default_rng(42)
    c, k = 3, 30
    xy = rng.uniform(0, 60, (2, k, 2))
    rois = np.concatenate([xy, xy + rng.uniform(10, 40, (2, k, 2))], -1).astype(np.float32)
    valid = np.ones((2, k), bool)
    valid[1, 20:] = False
    logits = (rng.normal(size=(2, k, c + 1)) * 2).astype(np.float32)
    deltas = rng.normal(0, 1, (2, k, 4 * c)).astype(np.float32)
    sizes = np.array([[80, 90], [70, 60]], np.float32)
    got = bbox_head.bbox_detections(logits, deltas, rois, valid, sizes, c, max_detections=10, nms_method=method)
    for b in range(2):
        probs = np.exp(logits[b]) / np.exp(logits[b]).sum(-1, keepdims=True)
        scores = np.where(valid[b][:, None], probs[:, :c], 0.0)
        boxes = np_decode(deltas[b].reshape(-1, 4).astype(np.float64), np.repeat(rois[b], c, 0).astype(np.float64),
                          (0,) * 4, STDS, math.log(1000 / 16)).reshape(k, c, 4)
        h, w = sizes[b]
        boxes = np.stack([boxes[..., 0].clip(0, w), boxes[..., 1].clip(0, h), boxes[..., 2].clip(0, w),
                          boxes[..., 3].clip(0, h)], -1)
        want = np_multiclass(boxes, scores, 10, 0.5, 0.05, method)
        n = len(want)
        assert int(got.num_valid[b]) == n
        np.testing.assert_allclose(got.scores[b, :n], [d[0] for d in want], rtol=1e-4)
        np.testing.assert_array_equal(got.classes[b, :n], [d[1] for d in want])
        np.testing.assert_allclose(got.boxes[b, :n], [d[2] for d in want], rtol=1e-4, atol=1e-3)
        assert (got.classes.numpy()[b, n:] == -1).all()


def test_mask_targets_analytic():
    """A rectangle bitmap cropped at boxes whose relation to it is known."""
    masks = np.zeros((1, 2, 40, 50), np.uint8)
    masks[0, 0, 8:24, 10:42] = 1  # x in [10, 42), y in [8, 24)
    masks[0, 1, 30:40, 0:5] = 1
    rois = np.array([[[10, 8, 42, 24],      # exactly the rectangle: all ones
                      [10, 8, 74, 24],      # twice as wide: left half ones
                      [0, 0, 10, 10],       # outside the rectangle: zeros
                      [10, 8, 42, 24]]], np.float32)  # not positive: zeros
    matched = np.array([[0, 0, 0, -1]], np.int32)
    got = mask_head.mask_targets(masks, rois, matched, resolution=28).numpy()
    assert got.shape == (1, 4, 28, 28)
    assert (got[0, 0] == 1).all()
    np.testing.assert_array_equal(got[0, 1, :, :14], 1)
    np.testing.assert_array_equal(got[0, 1, :, 14:], 0)
    assert (got[0, 2] == 0).all() and (got[0, 3] == 0).all()
    # The second gt: its own channel is used (box_index = b * G + matched).
    got2 = mask_head.mask_targets(masks, np.array([[[0, 30, 5, 40]]], np.float32), np.array([[1]]), 14).numpy()
    assert (got2 == 1).all()


def test_mask_targets_from_box_crops_match_full_image_bitmaps():
    """The pipeline's box-cropped masks give the targets of the full-image bitmaps they were cut from."""
    yy, xx = np.mgrid[0:60, 0:80] + 0.5
    full = np.zeros((1, 2, 60, 80), np.uint8)
    full[0, 0] = ((xx - 26) / 14) ** 2 + ((yy - 16) / 7) ** 2 <= 1  # an ellipse inside box 0
    full[0, 1, 30:50, 40:70] = 1  # a rectangle filling box 1
    gt_boxes = np.array([[[10, 8, 42, 24], [40, 30, 70, 50]]], np.float32)  # 32 x 16 and 30 x 20 pixels
    crops = np.zeros((1, 2, 32, 60), np.uint8)  # (S_h, S_w): integer scalings of the boxes
    crops[0, 0] = np.kron(full[0, 0, 8:24, 10:42], np.ones((2, 1), np.uint8))[:, np.arange(60) * 32 // 60]
    crops[0, 1] = 1
    rng = np.random.default_rng(45)
    centres = np.concatenate([rng.uniform(10, 42, (20, 1)), rng.uniform(8, 24, (20, 1))], 1)
    sizes = rng.uniform(10, 40, (20, 2))
    rois = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)[None].astype(np.float32)
    matched = np.array([[0] * 15 + [1] * 5], np.int32)
    rois[0, 15:] = [[38, 28, 72, 52], [40, 30, 70, 50], [45, 35, 60, 45], [30, 20, 55, 40], [50, 25, 80, 60]]
    want = mask_head.mask_targets(full, rois, matched, 28).numpy()
    got = mask_head.mask_targets(crops, rois, matched, 28, gt_boxes=gt_boxes).numpy()
    assert want[0, :15].sum() > 1000 and want[0, 15:].sum() > 1000
    assert (got == want).mean() > 0.98, (got != want).sum()
    np.testing.assert_array_equal(got[0, 16], 1)  # the RoI equal to a filled box


def np_paste(mask, box, height, width):
    """Per-pixel grid_sample (bilinear, zero padding, align_corners=False) at pixel centres."""
    m = mask.shape[0]
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    if x2 <= x1 or y2 <= y1:
        return out
    for i in range(height):
        for j in range(width):
            u = (j + 0.5 - x1) / (x2 - x1) * m - 0.5
            v = (i + 0.5 - y1) / (y2 - y1) * m - 0.5
            u0, v0 = math.floor(u), math.floor(v)
            total = 0.0
            for a, wa in ((v0, 1 - (v - v0)), (v0 + 1, v - v0)):
                for b, wb in ((u0, 1 - (u - u0)), (u0 + 1, u - u0)):
                    if 0 <= a < m and 0 <= b < m:
                        total += wa * wb * mask[a, b]
            out[i, j] = total
    return out


def test_paste_masks_matches_numpy_reference():
    rng = np.random.default_rng(43)
    masks = rng.uniform(size=(2, 3, 6, 6)).astype(np.float32)
    boxes = np.array([[[3.3, 2.7, 17.9, 11.2], [-4.0, 5.0, 9.5, 30.0], [10.0, 10.0, 10.5, 11.0]],
                      [[0.0, 0.0, 24.0, 20.0], [12.25, 1.5, 30.0, 8.75], [0, 0, 0, 0]]], np.float32)
    soft = mask_head.paste_masks(masks, boxes, (20, 24), threshold=None).numpy()
    hard = mask_head.paste_masks(masks, boxes, (20, 24)).numpy()
    assert hard.dtype == np.uint8 and hard.shape == (2, 3, 20, 24)
    for b in range(2):
        for k in range(3):
            want = np_paste(masks[b, k].astype(np.float64), boxes[b, k], 20, 24)
            np.testing.assert_allclose(soft[b, k], want, atol=1e-5)
            mismatch = hard[b, k] != (want >= 0.5)
            assert not (mismatch & (np.abs(want - 0.5) > 1e-5)).any()
    assert (soft[1, 2] == 0).all()  # a zero box pastes nothing
    # A constant-one mask pastes exactly the pixels whose centres lie inside the box (up to the
    # half-pixel ramp at the border: >= 0.5 there).
    ones = mask_head.paste_masks(np.ones((1, 1, 28, 28), np.float32), np.array([[[2.0, 3.0, 10.0, 7.0]]]), (10, 12))
    want = np.zeros((10, 12), np.uint8)
    want[3:7, 2:10] = 1
    np.testing.assert_array_equal(ones[0, 0], want)


def test_mask_head_and_probabilities(tmp_path):
    feats = tf.random.normal([2, 3, 14, 14, 8])
    head = mask_head.MaskHead(num_classes=4, num_convs=2, channels=8)
    logits = head(feats)
    assert logits.shape == (2, 3, 28, 28, 4)
    roundtrip(head, feats, tmp_path)
    classes = tf.constant([[1, 3, -1], [0, 0, 2]])
    probs = mask_head.mask_probabilities(logits, classes).numpy()
    sig = 1 / (1 + np.exp(-logits.numpy()))
    np.testing.assert_allclose(probs[0, 0], sig[0, 0, ..., 1], rtol=1e-5)
    np.testing.assert_allclose(probs[1, 2], sig[1, 2, ..., 2], rtol=1e-5)
    assert (probs[0, 2] == 0).all()
    targets = (np.random.default_rng(0).uniform(size=(2, 3, 28, 28)) > 0.5).astype(np.float32)
    weights = np.array([[1, 1, 0], [0, 1, 0]], np.float32)
    labels = tf.maximum(classes, 0)
    got = mask_head.mask_loss(logits, targets, labels, weights)
    x = np.stack([logits.numpy()[0, 0, ..., 1], logits.numpy()[0, 1, ..., 3], logits.numpy()[1, 1, ..., 0]])
    t = np.stack([targets[0, 0], targets[0, 1], targets[1, 1]])
    want = (np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))).mean()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ValueError, match="upsample"):
        mask_head.MaskHead(4, upsample="bilinear")


def test_mask_head_carafe_is_lazy_with_a_clear_error():
    try:
        from tfdet.layers.carafe import make_upsampler  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="make_upsampler"):
            mask_head.MaskHead(4, upsample="carafe")
    else:
        head = mask_head.MaskHead(4, num_convs=1, channels=8, upsample="carafe")
        assert head(tf.random.normal([1, 2, 14, 14, 8])).shape == (1, 2, 28, 28, 4)


def test_keypoint_targets_match_the_detectron2_formula():
    rois = np.array([[[10.0, 20.0, 66.0, 48.0], [0.0, 0.0, 28.0, 28.0]]], np.float32)
    kps = np.zeros((1, 2, 3, 3), np.float32)
    kps[0, 0] = [[10.0, 20.0, 2], [66.0, 48.0, 1], [30.5, 33.3, 0]]  # corners; invisible point
    kps[0, 1] = [[14.0, 14.0, 2], [28.5, 3.0, 2], [-1.0, 5.0, 2]]   # inside; outside right; outside left
    got = keypoint_head.keypoint_targets(kps, rois, np.array([[0, 1]]), heatmap_size=56).numpy()
    assert got[0, 0, 0] == 0 and got[0, 0, 1] == 55 * 56 + 55 and got[0, 0, 2] == -1
    assert got[0, 1, 0] == 28 * 56 + 28 and got[0, 1, 1] == -1 and got[0, 1, 2] == -1
    none = keypoint_head.keypoint_targets(kps, rois, np.array([[-1, -1]]), 56).numpy()
    assert (none == -1).all()


def test_keypoint_loss_decoding_and_head(tmp_path):
    rng = np.random.default_rng(44)
    heatmaps = rng.normal(size=(1, 2, 8, 8, 3)).astype(np.float32)
    targets = np.array([[[5, -1, 63], [0, 12, -1]]], np.int32)
    got = keypoint_head.keypoint_loss(heatmaps, targets)
    terms = []
    for r in range(2):
        for k in range(3):
            if targets[0, r, k] >= 0:
                flat = heatmaps[0, r, :, :, k].reshape(-1)
                terms.append(np.log(np.exp(flat).sum()) - flat[targets[0, r, k]])
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)
    # Decoding: a peak at cell (iy, ix) gives the cell centre in image pixels.
    peak = np.zeros((1, 1, 8, 8, 2), np.float32)
    peak[0, 0, 3, 5, 0] = 7.0
    peak[0, 0, 0, 7, 1] = 2.0
    points = keypoint_head.heatmaps_to_keypoints(peak, np.array([[[10.0, 20.0, 26.0, 36.0]]])).numpy()
    np.testing.assert_allclose(points[0, 0, 0], [10 + 5.5 * 2, 20 + 3.5 * 2, 7.0])
    np.testing.assert_allclose(points[0, 0, 1], [10 + 7.5 * 2, 20 + 0.5 * 2, 2.0])
    head = keypoint_head.KeypointHead(num_keypoints=3, num_convs=2, channels=8)
    feats = tf.random.normal([1, 2, 14, 14, 4])
    assert head(feats).shape == (1, 2, 56, 56, 3)
    roundtrip(head, feats, tmp_path)


def test_coco_keypoint_flip_map():
    names, flip = keypoint_head.COCO_KEYPOINT_NAMES, keypoint_head.COCO_KEYPOINT_FLIP_MAP
    assert len(names) == 17 and (flip[flip] == np.arange(17)).all()
    for k, name in enumerate(names):
        mirrored = name.replace("left", "#").replace("right", "left").replace("#", "right")
        assert names[flip[k]] == mirrored


def test_class_agnostic_detections_share_one_box_per_roi():
    rng = np.random.default_rng(46)
    rois = np.array([[[10, 10, 40, 40], [12, 30, 50, 60]]], np.float32)
    logits = np.array([[[3.0, 2.5, -1.0, 0.0], [0.0, 0.0, 4.0, 0.0]]], np.float32)
    deltas = rng.normal(0, 1, (1, 2, 4)).astype(np.float32)
    got = bbox_head.bbox_detections(logits, deltas, rois, np.ones((1, 2), bool), [[64, 64]], 3, max_detections=5)
    want = np_decode(deltas[0].astype(np.float64), rois[0].astype(np.float64), (0,) * 4, STDS, math.log(1000 / 16))
    n = int(got.num_valid[0])
    assert n == 3  # roi 0 as classes 0 and 1, roi 1 as class 2 (scores > 0.05)
    for box, cls in zip(got.boxes.numpy()[0, :n], got.classes.numpy()[0, :n]):
        np.testing.assert_allclose(box, want[1 if cls == 2 else 0].clip(0, 64), rtol=1e-4, atol=1e-3)
