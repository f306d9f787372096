"""Evaluation driver: run a predict function over batches, convert, evaluate, report.

The model protocol (`PredictFn`): any callable taking a dict of batched model inputs
  images [B, H, W, 3] float32 (0..255, padded), image_info [B, 3, 2] (the pipeline's), image_id [B]
and returning the detectors' padded outputs dict (`tfdet.evaluation.results`). Ground truth never
reaches it. `tfdet.evaluation.loaders` makes PredictFns from Keras models, checkpoints and SavedModels;
`tfdet.evaluation.tta` wraps one with test-time augmentation.
"""

import logging

import numpy as np

from tfdet.evaluation import coco_eval, results as results_lib

log = logging.getLogger(__name__)

MODEL_INPUT_KEYS = ("images", "image_info", "image_id")
EVAL_TYPES = coco_eval.IOU_TYPES + ("proposal",)


def model_inputs(batch):
    """The model's share of a pipeline batch (no ground truth)."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}


def predict_results(predict_fn, batches, class_to_category, score_threshold=0.0, mask_threshold=0.5,
                    on_batch=None):
    """COCO results of `predict_fn` over `batches` (an iterable of pipeline batches).

    `on_batch(batch, outputs)` (optional) sees every batch with its outputs (e.g. for visualization)."""
    out = []
    for batch in batches:
        outputs = predict_fn(model_inputs(batch))
        if on_batch is not None:
            on_batch(batch, outputs)
        out += results_lib.detections_to_coco(outputs, np.asarray(batch["image_info"]), np.asarray(batch["image_id"]),
                                              class_to_category, mask_threshold=mask_threshold,
                                              score_threshold=score_threshold)
    return out


def evaluate_results(coco_gt, results, eval_types=None, kpt_oks_sigmas=None, proposal_max_dets=(100, 300, 1000)):
    """{eval type: report} for each of `eval_types` (default: every COCO iou type the results support).

    "bbox" / "segm" / "keypoints" give {"metrics", "per_class"}; "proposal" gives {"metrics"} with the
    class-agnostic recall table (`coco_eval.proposal_recall`)."""
    eval_types = list(eval_types or coco_eval.available_iou_types(results))
    unknown = [t for t in eval_types if t not in EVAL_TYPES]
    if unknown:
        raise ValueError(f"unknown evaluation types {unknown}; choose from {EVAL_TYPES}.")
    report = {}
    for t in eval_types:
        if t == "proposal":
            report[t] = {"metrics": coco_eval.proposal_recall(coco_gt, results, proposal_max_dets)}
        else:
            report[t] = coco_eval.evaluate(coco_gt, results, t, kpt_oks_sigmas=kpt_oks_sigmas)
    return report


def format_report(report):
    """The AP tables (and per-class AP tables) of a report as text."""
    parts = []
    for t, r in report.items():
        parts.append(coco_eval.format_table(f"{t} ({'class-agnostic recall' if t == 'proposal' else 'COCO'})",
                                            r["metrics"]))
        if "per_class" in r:
            parts.append(coco_eval.format_per_class(f"{t} per-class AP", r["per_class"]))
    return "\n\n".join(parts)
