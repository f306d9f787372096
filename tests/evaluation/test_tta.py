"""Test-time augmentation: exact flip round trip, scale mapping, NMS / Soft-NMS merging, mask averaging."""

import numpy as np
import pytest

from tfdet.evaluation import tta


def _blob_model(half_sizes=(10.3, 7.9)):
    """A model that finds the centroid of the bright pixels of each image and returns a box of
    fractional half-sizes (scaled with the image) around it, class 0, plus a keypoint at the centroid
    and an asymmetric mask (left half 1, right half 0.2). Coordinates are float64 so that the test
    sees the mapping's own exactness rather than float32 output rounding."""
    def fn(inputs):
        images = inputs["images"].numpy()
        info = inputs["image_info"].numpy()
        b = images.shape[0]
        out = {"num_detections": np.ones([b], np.int32), "detection_boxes": np.zeros([b, 4, 4]),
               "detection_scores": np.zeros([b, 4], np.float32), "detection_classes": -np.ones([b, 4], np.int32),
               "detection_masks": np.zeros([b, 4, 8, 8], np.float32),
               "detection_keypoints": np.zeros([b, 4, 2, 3])}
        for i in range(b):
            ys, xs = np.nonzero(images[i, ..., 0] > 128)
            cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
            sy, sx = info[i, 1]
            hw, hh = half_sizes[0] * sx, half_sizes[1] * sy
            out["detection_boxes"][i, 0] = [cx - hw, cy - hh, cx + hw, cy + hh]
            out["detection_scores"][i, 0] = 0.9
            out["detection_classes"][i, 0] = 0
            out["detection_masks"][i, 0, :, :4] = 1.0
            out["detection_masks"][i, 0, :, 4:] = 0.2
            out["detection_keypoints"][i, 0] = [[cx - hw, cy, 1.0], [cx + hw, cy, 0.5]]  # "left", "right"
        return out
    return fn


def _image():
    image = np.zeros((75, 110, 3), np.uint8)
    image[20:41, 13:37] = 255  # off-centre so that a flip moves it
    return image


@pytest.mark.parametrize("scale", [(900, 600), (160, 100), (333, 77)])
def test_flip_round_trip_is_exact(scale):
    model = _blob_model()
    plain, _ = tta.tta_predict(model, _image(), [scale], flip=False, flip_map=[1, 0])
    both = []
    for flipped in (False, True):
        inputs = tta.augment_image(_image(), scale, flipped)
        info = inputs["image_info"].numpy()[0].astype(np.float64)
        dets = tta._unpad(model(inputs))
        if flipped:
            dets = tta.unflip(dets, info[2, 1], flip_map=[1, 0])
        both.append(tta.to_original(dets, info))
    np.testing.assert_allclose(both[1]["detection_boxes"], both[0]["detection_boxes"], rtol=0, atol=1e-9)
    # Keypoint positions come back under the right names (the fake's per-name scores stay its own).
    np.testing.assert_allclose(both[1]["detection_keypoints"][..., :2], both[0]["detection_keypoints"][..., :2],
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(both[1]["detection_masks"], both[0]["detection_masks"][..., ::-1])
    box = both[0]["detection_boxes"][0]
    assert np.any(box != np.round(box))  # fractional coordinates survive: nothing was rounded
    # In the original frame the box is the blob's centre (24.5, 30.5) +- the half sizes, at every scale.
    np.testing.assert_allclose(box, [25.0 - 10.3, 30.5 - 7.9, 25.0 + 10.3, 30.5 + 7.9], atol=0.6)
    np.testing.assert_allclose(plain["detection_boxes"][0, 0], both[0]["detection_boxes"][0], atol=1e-6)


def test_flip_merge_keeps_one_box_and_averages_mirrored_masks():
    out, info = tta.tta_predict(_blob_model(), _image(), [(160, 100)], flip=True, flip_map=[1, 0])
    assert out["num_detections"][0] == 1
    assert info.tolist() == [[[75, 110], [1, 1], [75, 110]]]
    mask = out["detection_masks"][0, 0]
    # The left-heavy mask and its mirror average to 0.6 everywhere (the flipped box matches exactly).
    np.testing.assert_allclose(mask, np.full((8, 8), 0.6), atol=1e-6)


def test_flip_with_keypoints_needs_flip_map():
    with pytest.raises(ValueError, match="flip_map"):
        tta.tta_predict(_blob_model(), _image(), [(160, 100)], flip=True)


def _greedy_nms(boxes, scores, classes, thr):
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if all(classes[i] != classes[k] or tta._iou(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def _candidates(seed=0):
    rng = np.random.default_rng(seed)
    gt = np.array([[10, 10, 50, 60], [40, 20, 90, 70], [12, 8, 48, 62]], np.float64)
    gt_classes = np.array([0, 1, 1])
    cands = []
    for _ in range(4):  # e.g. 2 scales x flip, each a noisy copy of the same objects
        cands.append({"detection_boxes": gt + rng.uniform(-2, 2, gt.shape),
                      "detection_scores": rng.uniform(0.3, 1.0, 3).astype(np.float32),
                      "detection_classes": gt_classes.copy()})
    return gt, cands


def test_multiscale_nms_merge_matches_reference():
    gt, cands = _candidates()
    out = tta.merge(cands, max_detections=10, method="nms", iou_threshold=0.5)
    boxes = np.concatenate([c["detection_boxes"] for c in cands])
    scores = np.concatenate([c["detection_scores"] for c in cands])
    classes = np.concatenate([c["detection_classes"] for c in cands])
    keep = _greedy_nms(boxes, scores, classes, 0.5)
    n = out["num_detections"][0]
    assert n == len(keep) == 3  # one per object: class 0 at the top-left never suppresses class 1
    np.testing.assert_allclose(out["detection_boxes"][0, :n], boxes[keep], atol=1e-5)
    np.testing.assert_allclose(out["detection_scores"][0, :n], scores[keep])
    np.testing.assert_array_equal(out["detection_classes"][0, :n], classes[keep])
    assert np.all(out["detection_classes"][0, n:] == -1)


def test_multiscale_soft_nms_merge_decays_duplicates():
    _, cands = _candidates(1)
    out = tta.merge(cands, max_detections=12, method="soft_nms", iou_threshold=0.3, min_score=1e-3)
    hard = tta.merge(cands, max_detections=12, method="nms", iou_threshold=0.3)
    n = out["num_detections"][0]
    assert n > hard["num_detections"][0]  # duplicates survive with decayed scores
    scores = out["detection_scores"][0, :n]
    assert np.all(np.diff(scores) <= 1e-7)
    np.testing.assert_allclose(np.sort(scores)[::-1][:3], np.sort(hard["detection_scores"][0, :3])[::-1], atol=1e-6)


def test_multiscale_end_to_end_maps_every_scale_back():
    scales = tta.SEED_SCALES[:2] + ((160, 100),)
    seen = []

    def model(inputs):
        seen.append(inputs["image_info"].numpy()[0])
        assert inputs["images"].shape[1] % 32 == 0 and inputs["images"].shape[2] % 32 == 0
        return _blob_model()(inputs)

    out, _ = tta.tta_predict(model, _image(), scales, flip=True, flip_map=[1, 0])
    assert len(seen) == 2 * len(scales)
    assert sorted({tuple(s[2]) for s in seen}) == sorted({(600.0, 880.0), (800.0, 1173.0), (100.0, 147.0)})
    assert out["num_detections"][0] == 1
    np.testing.assert_allclose(out["detection_boxes"][0, 0], [25.0 - 10.3, 30.5 - 7.9, 25.0 + 10.3, 30.5 + 7.9],
                               atol=0.6)


def test_bad_merge_method():
    with pytest.raises(ValueError, match="merge method"):
        tta.merge(_candidates()[1], method="wbf")


def test_no_detections_anywhere():
    def empty(inputs):
        return {"num_detections": np.zeros([1], np.int32), "detection_boxes": np.zeros([1, 5, 4], np.float32),
                "detection_scores": np.zeros([1, 5], np.float32), "detection_classes": -np.ones([1, 5], np.int32),
                "detection_masks": np.zeros([1, 5, 4, 4], np.float32)}

    out, info = tta.tta_predict(empty, _image(), [(160, 100), (120, 80)], flip=True, max_detections=7)
    assert out["num_detections"][0] == 0 and out["detection_masks"].shape == (1, 7, 4, 4)
    assert np.all(out["detection_classes"] == -1)
