"""Evaluate detections on a COCO-format set: COCO bbox / segm / keypoints AP tables, per-class AP,
proposal recall, test-time augmentation and visualizations.

    # a results json (COCO format) against annotations:
    .venv/bin/python bin/evaluate.py --annotations=val.json --predictions=results.json
    # a trained model (config + checkpoint file or workdir), writing the results json:
    .venv/bin/python bin/evaluate.py --config=configs/mask_rcnn.py:tiny --checkpoint=workdir \
        --annotations=val.json --images=val/images --output=out/results.json --visualize=8
    # a SavedModel written by bin/export.py (a version folder), as a client would call it:
    .venv/bin/python bin/evaluate.py --saved_model=export/1 --annotations=val.json --images=val/images
    # a trained model with flip and the seeds' five test scales merged by Soft-NMS:
    .venv/bin/python bin/evaluate.py --config=... --checkpoint=workdir --annotations=val.json \
        --tta_flip --tta_scales=seeds --tta_merge=soft_nms
    # every checkpoint as training writes it:
    .venv/bin/python bin/evaluate.py --config=... --watch=workdir --watch_timeout=3600 --annotations=...

--saved_model sends each image file's bytes to the export's encoded_image signature (else the decoded
image to its image_tensor one), so the export's own resize, padding and mask pasting are evaluated, and
takes its detection_classes as category ids and its boxes and masks in original pixels (--scale, --config
and test-time augmentation do not apply to it).

A config whose data block has category_ids (a converted model's, bin/convert.py) maps model class c to
category id category_ids[c]; without it class c is the c-th annotated category in id order.

The tables are printed and written as json to --metrics_output (default <output>.metrics.json, or
<predictions>.metrics.json). A model run on a set where some annotated images cannot be read or decoded
reports no AP (their objects would count as missed) unless --allow_missing, which leaves them out of the
ground truth and says how many.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import tfdet.cli  # noqa: E402
from tfdet.engine.strategy import build_strategy  # noqa: E402
from tfdet.evaluation import loaders, runner  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "model config file (for --checkpoint / --watch)")
flags.DEFINE_string("annotations", None, "COCO annotations json", required=True)
flags.DEFINE_string("images", "", "image folder (default: the annotations' folder)")
flags.DEFINE_string("tfrecords", "", "TFRecords prefix (tfdet.data.tfrecords) to read the images from instead")
flags.DEFINE_string("predictions", "", "COCO results json to evaluate (no model run)")
flags.DEFINE_string("checkpoint", "", "checkpoint file/prefix, or a training folder (its latest checkpoint)")
flags.DEFINE_string("saved_model", "", "SavedModel folder (a version of bin/export.py's export_dir): run as "
                    "exported, through its encoded_image (else image_tensor) signature")
flags.DEFINE_string("watch", "", "training folder: evaluate each new checkpoint")
flags.DEFINE_float("watch_timeout", 3600.0, "--watch stops after this many seconds without a new checkpoint")
flags.DEFINE_integer("watch_last_step", None, "--watch stops after the checkpoint of this step")
flags.DEFINE_string("output", "", "results json (COCO format) written by the model paths")
flags.DEFINE_string("metrics_output", "", "tables json (default <output or predictions>.metrics.json)")
flags.DEFINE_list("eval_types", [], "bbox,segm,keypoints,proposal (default: what the results hold; proposal for "
                  "an RPN config)")
flags.DEFINE_integer("batch_size", 1, "images per model call (split across the strategy's replicas)")
flags.DEFINE_enum("strategy", "default", list(runner.STRATEGIES), "tf.distribute strategy of the --checkpoint / "
                  "--watch paths: default, one_device or mirrored (all local GPUs)")
flags.DEFINE_string("scale", "", "single-scale test size 'LONGxSHORT' (default: the config's, else 1333x800)")
flags.DEFINE_float("score_threshold", 0.0, "detections scoring below are not written")
flags.DEFINE_string("tta_scales", "", "test-time scales 'LONGxSHORT,...' or 'seeds' (HTC's 600..1400)")
flags.DEFINE_bool("tta_flip", False, "add horizontally flipped copies at test time")
flags.DEFINE_enum("tta_merge", "nms", ["nms", "soft_nms"], "how test-time detections are merged")
flags.DEFINE_integer("visualize", 0, "render this many images with their detections")
flags.DEFINE_string("visualize_dir", "", "where the PNGs go (default: next to the metrics json)")
flags.DEFINE_bool("allow_missing", False, "evaluate even when some annotated images cannot be read or decoded, "
                  "leaving them out of the ground truth (by default such a run reports no AP)")
FLAGS = flags.FLAGS


def build_model():
    """The detector of --config, built (all weights created)."""
    if _CONFIG.value is None:
        raise app.UsageError("--checkpoint and --watch need --config (the model the checkpoint belongs to).")
    from tfdet.modeling.detectors import build_detector

    return build_detector(_CONFIG.value.model)


def settings():
    scale = runner.parse_scales(FLAGS.scale)
    if scale:
        scale = scale[0]
    elif _CONFIG.value is not None and "data" in _CONFIG.value and "scale" in _CONFIG.value.data:
        scale = tuple(_CONFIG.value.data.scale)
    else:
        scale = (1333, 800)
    # Test-time augmentation from the flags, else from the config's optional `test` block.
    test = _CONFIG.value.get("test", {}) if _CONFIG.value is not None else {}
    tta_scales = runner.parse_scales(FLAGS.tta_scales) or tuple(tuple(s) for s in test.get("tta_scales", ()))
    tta_flip = FLAGS.tta_flip or bool(test.get("tta_flip", False))
    tta_merge = FLAGS.tta_merge if FLAGS["tta_merge"].present else test.get("tta_merge", FLAGS.tta_merge)
    # A model's class -> category ids and test size rule from its config's data block (a converted model's;
    # absent: the annotations' categories in id order, tfdet's rule).
    data = (_CONFIG.value.get("data") or {}) if _CONFIG.value is not None and (FLAGS.checkpoint or FLAGS.watch) else {}
    category_ids = data.get("category_ids")
    if category_ids is not None:
        category_ids = tuple(int(c) for c in category_ids)
        num_classes = int(_CONFIG.value.model.num_classes)
        if len(category_ids) != num_classes:
            raise ValueError(f"config.data.category_ids has {len(category_ids)} ids but config.model.num_classes is "
                             f"{num_classes}: give one category id per class.")
    eval_types = tuple(FLAGS.eval_types)
    if not eval_types and _CONFIG.value is not None and _CONFIG.value.model.get("type") == "RPN":
        eval_types = ("proposal",)  # an RPN-only detector's boxes are proposals: class-agnostic recall
    return runner.EvalSettings(
        annotations=FLAGS.annotations, images=FLAGS.images, tfrecords=FLAGS.tfrecords, predictions=FLAGS.predictions,
        output=FLAGS.output, metrics_output=FLAGS.metrics_output, eval_types=eval_types, batch_size=FLAGS.batch_size,
        scale=scale, score_threshold=FLAGS.score_threshold, tta_scales=tta_scales,
        tta_flip=tta_flip, tta_merge=tta_merge, visualize=FLAGS.visualize,
        visualize_dir=FLAGS.visualize_dir, allow_missing=FLAGS.allow_missing, category_ids=category_ids,
        size_rule=data.get("size_rule", "round"))


def main(argv):
    del argv
    sources = [n for n in ("predictions", "checkpoint", "saved_model", "watch") if FLAGS[n].value]
    if len(sources) != 1:
        raise app.UsageError(f"give exactly one of --predictions, --checkpoint, --saved_model, --watch (got "
                             f"{sources or 'none'}).")
    _evaluate(settings())


def _evaluate(s):
    if FLAGS.predictions:
        runner.run(s)
    elif FLAGS.saved_model:
        runner.run(s, loaders.saved_model_predict_fn(FLAGS.saved_model))
    elif FLAGS.checkpoint:
        runner.run_checkpoint(s, build_model, FLAGS.checkpoint, strategy=build_strategy(FLAGS.strategy))
    else:
        reports = runner.run_watch(s, build_model, FLAGS.watch, FLAGS.watch_timeout,
                                   last_step=FLAGS.watch_last_step, strategy=build_strategy(FLAGS.strategy))
        logging.info("evaluated %d checkpoints", len(reports))


if __name__ == "__main__":
    tfdet.cli.run(main, config_flag=_CONFIG)  # errors: one line, exit 2 (usage) or 1
