"""COCO AP / AR with pycocotools: bbox, segm and keypoints tables, per-class AP, proposal recall.

Every number is pycocotools' own (`COCOeval.evaluate/accumulate/summarize`, whose stdout is captured);
this module only names them, adds the per-class AP (the area="all", maxDets=last slice of
`eval["precision"]`, averaged over IoU thresholds and recall points like the overall AP) and formats.
"""

import contextlib
import copy
import io
import json
import logging
import math
import os
import tempfile

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "keypoints")
METRICS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}
METRICS["segm"] = METRICS["bbox"]
PROPOSAL_METRICS = ("AR@100", "AR@300", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000")
_FIELDS = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}
UNIFORM_OKS_SIGMA = 0.05  # for keypoint sets other than COCO's 17 when no sigmas are given


def oks_sigmas(coco_gt, sigmas=None):
    """Per-keypoint OKS sigmas: `sigmas` if given, COCO's for 17-keypoint data, else uniform 0.05 (logged)."""
    kp_cats = [c for c in coco_gt.dataset.get("categories", []) if c.get("keypoints")]
    k = len(kp_cats[0]["keypoints"]) if kp_cats else 17
    if sigmas is not None:
        sigmas = np.asarray(sigmas, np.float64)
        if sigmas.shape != (k,):
            raise ValueError(f"kpt_oks_sigmas must hold one sigma per keypoint ({k}), got shape {sigmas.shape}.")
        return sigmas
    if k == 17:
        return None  # pycocotools' COCO sigmas
    log.warning("%d keypoints and no OKS sigmas given: using %g for every keypoint.", k, UNIFORM_OKS_SIGMA)
    return np.full([k], UNIFORM_OKS_SIGMA)


def coco_from_dataset(data):
    """A pycocotools COCO index over an in-memory dataset dict, quietly."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_results(coco_gt, results, source="results"):
    """Raises ValueError naming the first problem of a COCO results list against the ground truth."""
    if not isinstance(results, list):
        raise ValueError(f"{source}: COCO results must be a json list of detections, got {type(results).__name__}.")
    images, cats = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "image_id" not in r or "category_id" not in r or "score" not in r:
            raise ValueError(f"{source}: detection {i} needs image_id, category_id and score, got {r!r:.200}.")
        if r["image_id"] not in images:
            raise ValueError(f"{source}: detection {i} has image_id {r['image_id']} which is not in the annotations.")
        if r["category_id"] not in cats:
            raise ValueError(f"{source}: detection {i} has category_id {r['category_id']} which is not among the "
                             f"annotations' categories {sorted(cats)}.")


def load_results(path, coco_gt):
    """Reads and checks a COCO results json file (a list of detections)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        with open(path) as f:
            results = json.load(f)
    except ValueError as e:
        raise ValueError(f"predictions file {path} is not valid JSON: {e}") from None
    check_results(coco_gt, results, source=path)
    return results


def available_iou_types(results):
    """The iou types the results can be evaluated for (those whose field every detection has)."""
    if not results:
        return ["bbox"]
    return [t for t in IOU_TYPES if all(_FIELDS[t] in r for r in results)]


def _run(coco_gt, results, iou_type, params=None):
    """A summarized COCOeval over `results` restricted to what `iou_type` reads."""
    dets = copy.deepcopy(results)  # loadRes writes ids and areas into the dicts
    if iou_type == "segm":  # without bbox, loadRes takes the area from the mask (detectron2 does the same)
        for d in dets:
            d.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        for k, v in (params or {}).items():
            setattr(ev.params, k, v)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_class_ap(ev, coco_gt):
    """{category name: AP} at area "all" and the largest maxDets; NaN for a category without ground truth."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[coco_gt.cats[cat_id].get("name", str(cat_id))] = float(np.mean(p)) if p.size else float("nan")
    return out


def _check_ground_truth(coco_gt, iou_type):
    anns = coco_gt.dataset.get("annotations", [])
    if iou_type == "segm":
        bad = [a.get("id") for a in anns if not a.get("segmentation")]
        if bad:
            raise ValueError(f"segm evaluation needs a segmentation on every ground-truth annotation; annotation id "
                             f"{bad[0]} (and {len(bad) - 1} more) has none.")
    if iou_type == "keypoints" and not any(c.get("keypoints") for c in coco_gt.dataset.get("categories", [])):
        raise ValueError("keypoints evaluation needs a category with 'keypoints' in the annotations.")


def evaluate(coco_gt, results, iou_type="bbox", kpt_oks_sigmas=None):
    """COCO metrics of `results` (list of result dicts) for one iou type.

    Returns {"metrics": {name: value}, "per_class": {category name: AP}}; values in [0, 1], -1 where
    pycocotools has nothing to average (no ground truth in that area range). With no detections at all
    every metric is 0 (pycocotools cannot load an empty result list). `kpt_oks_sigmas`: see `oks_sigmas`.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}.")
    names = METRICS[iou_type]
    if not results:
        log.warning("no detections: every %s metric is 0.", iou_type)
        cats = [coco_gt.cats[c].get("name", str(c)) for c in sorted(coco_gt.getCatIds())]
        return {"metrics": dict.fromkeys(names, 0.0), "per_class": dict.fromkeys(cats, 0.0)}
    _check_ground_truth(coco_gt, iou_type)
    missing = [i for i, r in enumerate(results) if _FIELDS[iou_type] not in r]
    if missing:
        raise ValueError(f"{iou_type} evaluation needs '{_FIELDS[iou_type]}' in every detection; detection "
                         f"{missing[0]} has none.")
    params = {}
    if iou_type == "keypoints":
        sigmas = oks_sigmas(coco_gt, kpt_oks_sigmas)
        if sigmas is not None:
            params["kpt_oks_sigmas"] = sigmas
    ev = _run(coco_gt, results, iou_type, params)
    return {"metrics": dict(zip(names, (float(s) for s in ev.stats))), "per_class": per_class_ap(ev, coco_gt)}


def proposal_recall(coco_gt, proposals, max_dets=(100, 300, 1000)):
    """Class-agnostic proposal recall (COCOeval bbox, useCats=0): AR@n for each n in max_dets and
    AR small/medium/large at the largest n. `proposals`: COCO results (any category id)."""
    if len(max_dets) != 3:
        raise ValueError(f"max_dets must hold 3 increasing counts (COCOeval's summary slots), got {max_dets}.")
    names = [f"AR@{n}" for n in max_dets] + [f"AR{a}@{max_dets[-1]}" for a in "sml"]
    if not proposals:
        log.warning("no proposals: every recall is 0.")
        return dict.fromkeys(names, 0.0)
    ev = _run(coco_gt, proposals, "bbox", {"useCats": 0, "maxDets": list(max_dets)})
    return dict(zip(names, (float(s) for s in ev.stats[6:12])))


def format_table(title, metrics):
    """A two-row text table: metric names over values (percent, 1 decimal; '-' for -1 / NaN)."""
    names = list(metrics)
    cells = ["-" if (v is None or math.isnan(v) or v < 0) else f"{100 * v:.1f}" for v in metrics.values()]
    widths = [max(len(n), len(c)) for n, c in zip(names, cells)]
    row = lambda xs: " | ".join(x.rjust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([title, row(names), "-+-".join("-" * w for w in widths), row(cells)])


def format_per_class(title, per_class, columns=3):
    """Per-class AP laid out in `columns` (name, AP) column pairs."""
    items = [(n, "-" if math.isnan(v) else f"{100 * v:.1f}") for n, v in per_class.items()]
    if not items:
        return title
    nw = max(len(n) for n, _ in items + [("category", "")])
    rows = [items[i:i + columns] for i in range(0, len(items), columns)]
    head = " | ".join(f"{'category':<{nw}} | {'AP':>5}" for _ in range(min(columns, len(items))))
    lines = [title, head, "-" * len(head)]
    lines += [" | ".join(f"{n:<{nw}} | {v:>5}" for n, v in r) for r in rows]
    return "\n".join(lines)


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json_atomic(path, obj):
    """Writes `obj` as json to `path` through a temporary sibling and a rename (no half-written files);
    NaN becomes null."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_ready(obj), f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
