"""COCO tables against pycocotools run directly; per-class AP against single-category evaluations;
proposal recall against a direct class-agnostic COCOeval."""

import contextlib
import copy
import io
import json
import math
import os

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from tfdet.evaluation import coco_eval, results
from tests.evaluation.fakes import gt_outputs


def _direct(coco_gt, dets, iou_type, **params):
    with contextlib.redirect_stdout(io.StringIO()):
        dets = copy.deepcopy(dets)
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox")
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        for k, v in params.items():
            setattr(ev.params, k, v)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.fixture(scope="module")
def noisy(reader):
    recs = reader.records
    out, info, ids = gt_outputs(reader, recs, np.full((len(recs), 2), 1.25), jitter=4.0, mask_size=28,
                                keypoints=True, seed=3, drop=1)
    return results.detections_to_coco(out, info, ids, reader.class_to_category)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_metrics_are_pycocotools_numbers(reader, noisy, iou_type):
    got = coco_eval.evaluate(reader.coco, noisy, iou_type)
    params = {"kpt_oks_sigmas": np.full(5, 0.05)} if iou_type == "keypoints" else {}
    stats = _direct(reader.coco, noisy, iou_type, **params)
    assert list(got["metrics"].values()) == [float(s) for s in stats]
    assert 0 < got["metrics"]["AP"] < 1  # jittered and incomplete: a real, non-trivial number
    assert list(got["metrics"]) == list(coco_eval.METRICS[iou_type])


def test_per_class_ap_equals_single_category_evaluation(reader, noisy):
    per_class = coco_eval.evaluate(reader.coco, noisy, "bbox")["per_class"]
    assert list(per_class) == reader.class_names
    for cat_id, name in zip(reader.category_ids, reader.class_names):
        has_gt = bool(reader.coco.getAnnIds(catIds=[cat_id]))
        if not has_gt:
            assert math.isnan(per_class[name])
            continue
        assert per_class[name] == pytest.approx(_direct(reader.coco, noisy, "bbox", catIds=[cat_id])[0], abs=1e-12)


def test_proposal_recall_matches_class_agnostic_cocoeval(reader):
    recs = reader.records
    rng = np.random.default_rng(5)
    b, n = len(recs), 400
    boxes = np.zeros((b, n, 4), np.float32)
    for i, rec in enumerate(recs):  # random boxes plus jittered ground truth, as an RPN would give
        xy = rng.uniform(0, 80, (n, 2))
        boxes[i] = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], 1)
        k = rec.num_instances
        boxes[i, 150:150 + k] = rec.boxes + rng.uniform(-3, 3, (k, 4))
    scores = rng.uniform(size=(b, n)).astype(np.float32)
    num = np.array([n, 250, 120][:b], np.int32)
    info = np.array([[[r.height, r.width], [1, 1], [r.height, r.width]] for r in recs], np.float32)
    props = results.proposals_to_coco(boxes, scores, num, info, [r.image_id for r in recs])
    ar = coco_eval.proposal_recall(reader.coco, props, (100, 300, 1000))
    stats = _direct(reader.coco, props, "bbox", useCats=0, maxDets=[100, 300, 1000])
    assert list(ar) == list(coco_eval.PROPOSAL_METRICS)
    assert list(ar.values()) == [float(s) for s in stats[6:12]]
    assert ar["AR@100"] <= ar["AR@300"] <= ar["AR@1000"] and ar["AR@1000"] > 0


def test_oks_sigmas(reader):
    assert coco_eval.oks_sigmas(reader.coco).tolist() == [0.05] * 5
    np.testing.assert_array_equal(coco_eval.oks_sigmas(reader.coco, [0.1] * 5), [0.1] * 5)
    with pytest.raises(ValueError, match="one sigma per keypoint"):
        coco_eval.oks_sigmas(reader.coco, [0.1] * 17)


def test_no_detections_give_zeros(reader):
    got = coco_eval.evaluate(reader.coco, [], "bbox")
    assert set(got["metrics"].values()) == {0.0}
    assert coco_eval.proposal_recall(reader.coco, [])["AR@1000"] == 0.0


def test_bad_results_are_named(reader, noisy, tmp_path):
    with pytest.raises(ValueError, match="image_id 987654"):
        coco_eval.check_results(reader.coco, [dict(noisy[0], image_id=987654)])
    with pytest.raises(ValueError, match="category_id 77"):
        coco_eval.check_results(reader.coco, [dict(noisy[0], category_id=77)])
    with pytest.raises(ValueError, match="keypoints"):
        coco_eval.evaluate(reader.coco, [{k: v for k, v in noisy[0].items() if k != "keypoints"}], "keypoints")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        coco_eval.load_results(str(tmp_path / "nothing.json"), reader.coco)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        coco_eval.load_results(str(bad), reader.coco)
    bad.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="json list"):
        coco_eval.load_results(str(bad), reader.coco)


def test_ground_truth_without_masks_or_keypoints_is_named(reader, noisy):
    data = copy.deepcopy(reader.coco.dataset)  # (segm evaluation turns GT polygons into RLE in place)
    data["annotations"][1].pop("segmentation")
    for c in data["categories"]:
        c.pop("keypoints", None)
    gt = coco_eval.coco_from_dataset(data)
    with pytest.raises(ValueError, match=f"annotation id {data['annotations'][1]['id']}"):
        coco_eval.evaluate(gt, noisy, "segm")
    with pytest.raises(ValueError, match="category with 'keypoints'"):
        coco_eval.evaluate(gt, noisy, "keypoints")
    assert coco_eval.evaluate(gt, noisy, "bbox")["metrics"]["AP"] > 0


def test_tables_and_atomic_json(tmp_path):
    table = coco_eval.format_table("bbox", {"AP": 0.4567, "APs": -1.0})
    assert "45.7" in table and table.splitlines()[-1].strip().endswith("-")
    per_class = coco_eval.format_per_class("per class", {"cat": 0.5, "dog": float("nan")})
    assert "50.0" in per_class and "dog" in per_class
    path = tmp_path / "sub" / "metrics.json"
    coco_eval.write_json_atomic(str(path), {"bbox": {"AP": np.float32(0.5), "x": float("nan")}})
    assert json.loads(path.read_text()) == {"bbox": {"AP": 0.5, "x": None}}
    assert os.listdir(path.parent) == ["metrics.json"]
