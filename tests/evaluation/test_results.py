"""Padded outputs -> COCO results: exact box mapping, mask pasting, keypoints, perfect detections."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tfdet.evaluation import coco_eval, results
from tests.evaluation.fakes import gt_outputs


def _paste_reference(mask, box, height, width):
    """Per-pixel bilinear sampling with zero padding, written from the definition."""
    m = mask.shape[0]
    padded = np.pad(mask.astype(np.float64), 1)  # padded[r + 1, c + 1] = mask[r, c]
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            u = (j + 0.5 - x1) / (x2 - x1) * m - 0.5
            v = (i + 0.5 - y1) / (y2 - y1) * m - 0.5
            if not (-1 < u < m and -1 < v < m):
                continue
            c, r = int(np.floor(u)), int(np.floor(v))
            fu, fv = u - c, v - r
            val = 0.0
            for dr, wr in ((0, 1 - fv), (1, fv)):
                for dc, wc in ((0, 1 - fu), (1, fu)):
                    val += wr * wc * padded[r + dr + 1, c + dc + 1]
            out[i, j] = val
    return out


def test_paste_mask_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(7, 7))
    for box in ([3.3, 2.7, 17.9, 11.2], [-2.5, 4.0, 9.0, 23.5], [0.0, 0.0, 24.0, 20.0]):
        got = results.paste_mask(mask, box, 21, 19, threshold=None)
        np.testing.assert_allclose(got, _paste_reference(mask, box, 21, 19), atol=1e-12)
        np.testing.assert_array_equal(results.paste_mask(mask, box, 21, 19),
                                      (_paste_reference(mask, box, 21, 19) >= 0.5).astype(np.uint8))


def test_paste_full_mask_fills_its_integer_box_exactly():
    got = results.paste_mask(np.ones((28, 28)), [10, 20, 38, 48], 60, 50)
    want = np.zeros((60, 50), np.uint8)
    want[20:48, 10:38] = 1
    np.testing.assert_array_equal(got, want)


def test_boxes_map_back_exactly_without_rounding():
    rng = np.random.default_rng(1)
    original = rng.uniform(0, 400, (50, 2))
    boxes = np.concatenate([original, original + rng.uniform(1, 200, (50, 2))], axis=1)
    boxes = np.clip(boxes, 0, [640, 480, 640, 480])
    sy, sx = 800 / 480, 1067 / 640
    info = np.array([[480, 640], [sy, sx], [800, 1067]])
    back = results.boxes_to_original(boxes * [sx, sy, sx, sy], info)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)
    assert np.any(back != np.round(back))


def test_perfect_detections_give_ap_one(reader):
    recs = reader.records
    scales = np.array([[1.5, 1.25], [0.75, 0.5], [2.0, 2.0]])[:len(recs)]
    out, info, ids = gt_outputs(reader, recs, scales, keypoints=True)
    dets = results.detections_to_coco(out, info, ids, reader.class_to_category)
    assert len(dets) == sum(r.num_instances for r in recs)
    for d in dets:
        assert d["category_id"] in reader.category_ids
        assert all(isinstance(v, float) for v in d["bbox"])
    bbox = coco_eval.evaluate(reader.coco, dets, "bbox")["metrics"]
    assert bbox["AP"] == pytest.approx(1.0) and bbox["AR100"] == pytest.approx(1.0)
    kps = coco_eval.evaluate(reader.coco, dets, "keypoints")["metrics"]
    assert kps["AP"] == pytest.approx(1.0)
    # The keypoints written are COCO's integer pixel indices again.
    raw = {a["id"]: a["keypoints"] for a in reader.coco.dataset["annotations"]}
    for rec in recs:
        mine = [d for d in dets if d["image_id"] == rec.image_id]
        for d, ann_id in zip(mine, rec.ann_ids):
            np.testing.assert_allclose(np.reshape(d["keypoints"], (-1, 3))[:, :2],
                                       np.reshape(raw[ann_id], (-1, 3))[:, :2], atol=1e-4)


def test_pasted_masks_match_ground_truth(reader):
    recs = reader.records
    out, info, ids = gt_outputs(reader, recs, np.full((len(recs), 2), 1.5), mask_size=112)
    dets = results.detections_to_coco(out, info, ids, reader.class_to_category)
    for rec in recs:
        gt = reader.load_masks(rec)
        mine = [d for d in dets if d["image_id"] == rec.image_id]
        assert len(mine) == rec.num_instances
        for d, g in zip(mine, gt):
            assert d["segmentation"]["size"] == [rec.height, rec.width]
            iou = mask_utils.iou([d["segmentation"]], [mask_utils.encode(np.asfortranarray(g))], [0])[0, 0]
            assert iou > 0.9
    assert coco_eval.evaluate(reader.coco, dets, "segm")["metrics"]["AP50"] == pytest.approx(1.0)


def test_padding_and_score_threshold_are_skipped(reader):
    rec = reader.records[0]
    out, info, ids = gt_outputs(reader, [rec], [[1.0, 1.0]])
    n = out["num_detections"][0]
    out["detection_classes"][0, n:] = 0  # garbage beyond num_detections must be ignored
    assert len(results.detections_to_coco(out, info, ids, reader.class_to_category)) == n
    low = float(np.min(out["detection_scores"][0, :n]))
    kept = results.detections_to_coco(out, info, ids, reader.class_to_category, score_threshold=low + 1e-6)
    assert len(kept) == n - 1


def test_bad_outputs_are_named(reader):
    rec = reader.records[0]
    out, info, ids = gt_outputs(reader, [rec], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="detection_scores"):
        results.detections_to_coco({k: v for k, v in out.items() if k != "detection_scores"}, info, ids, {})
    with pytest.raises(ValueError, match="image_info"):
        results.detections_to_coco(out, info[:, :2], ids, reader.class_to_category)
    out["detection_classes"][0, 0] = 7
    with pytest.raises(ValueError, match="class 7"):
        results.detections_to_coco(out, info, ids, reader.class_to_category)


def test_sample_mask_is_zero_padded_linear_interpolation():
    values = np.array([2.0, 5.0, -1.0, 4.0])
    coords = np.array([-3.0, 0.0, 1.0, 2.5, 4.0, 7.9, 8.2, 9.5, 11.0])  # the axis spans [0, 8], cells of 2
    centres = np.array([-1.0, 1.0, 3.0, 5.0, 7.0, 9.0])  # with the zero cells at -1 and 9
    padded = np.concatenate([[0.0], values, [0.0]])
    want = np.interp(coords, centres, padded, left=0.0, right=0.0)
    got = results.sample_mask(values[None, :], [0.0, 0.0, 8.0, 1.0], [0.5], coords)  # one row of cells
    np.testing.assert_allclose(got[0], want, atol=1e-12)
    np.testing.assert_allclose(results.sample_mask(values[:, None], [0.0, 0.0, 1.0, 8.0], coords, [0.5])[:, 0], want,
                               atol=1e-12)
