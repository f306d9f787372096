"""Export a trained detector as a TF Serving SavedModel: export_dir/<version>/ (see docs/serving.md).

    .venv/bin/python bin/export.py --config=configs/mask_rcnn.py:tiny --checkpoint=workdir \
        --export_dir=export/mask_rcnn --annotations=val.json            # composite ops, both inputs
    .venv/bin/python bin/export.py ... --ops=fused --input_type=image_tensor --input_size=800x1333

--ops=composite (default) gives a graph of stock TensorFlow ops that stock tensorflow_model_server
loads; --ops=fused uses tfdet's Tfdet> kernels (a server built with //:tfdet_ops_kernels is needed).
Errors are one line (--debug: the traceback), exit status 2 for bad flags and 1 otherwise; the target
folder, version and category ids are checked before the model is built, and nothing is left in
export_dir by a failed export.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tfdet import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "model config file", lock_config=False)
flags.DEFINE_string("checkpoint", "", "checkpoint file/prefix, or a training folder (its latest); empty: "
                    "the freshly initialised weights (for smoke tests only)")
flags.DEFINE_string("export_dir", None, "the model's base folder; the version goes to <export_dir>/<version>",
                    required=True)
flags.DEFINE_list("input_type", ["image_tensor", "encoded_image"], "signatures to export; the first is "
                  "serving_default: image_tensor (uint8 [B,H,W,3]) and/or encoded_image (string [B])")
flags.DEFINE_enum("ops", "composite", ["composite", "fused"], "op implementation baked into the graph")
flags.DEFINE_integer("version", None, "version folder (default: 1 + the largest existing)")
flags.DEFINE_enum("mask_output", "box", ["box", "image"], "detection_masks box-relative [M,M] probabilities or "
                  "full-image uint8 0/1 bitmaps")
flags.DEFINE_string("input_size", "", "fixed 'HxW' of the image_tensor input (default: dynamic)")
flags.DEFINE_string("scale", "", "test scale 'LONGxSHORT' (default: the config's data.scale)")
flags.DEFINE_string("annotations", "", "COCO json whose categories (sorted by id) give detection_classes ids")
flags.DEFINE_list("category_ids", [], "category id of each class (default: --annotations, else the config's "
                  "data.category_ids, else 1..C)")
flags.DEFINE_string("model_name", "tfdet", "model name written into the warm-up requests")
flags.DEFINE_bool("warmup", True, "write assets.extra/tf_serving_warmup_requests")
FLAGS = flags.FLAGS
flags.register_validator("version", lambda v: v is None or v >= 0, "--version must be >= 0")


def parse_size(text, name):
    try:
        a, b = (int(v) for v in text.lower().split("x"))
        if min(a, b) < 1:
            raise ValueError
    except ValueError:
        raise app.UsageError(f"--{name} must be two positive sizes like 800x1333, got {text!r}.") from None
    return a, b


def category_ids(num_classes, config_ids=None):
    """The --category_ids, else the sorted category ids of --annotations, else `config_ids` (the config's
    data.category_ids, e.g. a converted model's), else None (1..C)."""
    if FLAGS.category_ids:
        try:
            ids = [int(c) for c in FLAGS.category_ids]
        except ValueError:
            raise app.UsageError(f"--category_ids must be integers, got {','.join(FLAGS.category_ids)}.") from None
        if len(ids) != num_classes:
            raise app.UsageError(f"--category_ids has {len(ids)} ids but the model (config.model.num_classes) has "
                                 f"{num_classes} classes: give one id per class.")
        return ids
    if not FLAGS.annotations:
        if config_ids is not None and len(config_ids) != num_classes:
            raise ValueError(f"config.data.category_ids has {len(config_ids)} ids but config.model.num_classes is "
                             f"{num_classes}: give one id per class (or --category_ids).")
        return None if config_ids is None else [int(c) for c in config_ids]
    try:
        with open(FLAGS.annotations) as f:
            ids = sorted(int(c["id"]) for c in json.load(f)["categories"])
    except OSError as err:
        raise OSError(f"cannot read --annotations {FLAGS.annotations} ({err.strerror or err}).") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--annotations {FLAGS.annotations} is not a COCO annotations json with a 'categories' "
                         f"list of {{'id': ...}} entries ({type(err).__name__}: {err}).") from None
    if len(ids) != num_classes:
        raise ValueError(f"--annotations {FLAGS.annotations} has {len(ids)} categories but the model "
                         f"(config.model.num_classes) has {num_classes} classes; use the annotations the model was "
                         "trained on, or give --category_ids.")
    return ids


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (the model the checkpoint belongs to).")
    config = _CONFIG.value
    scale = parse_size(FLAGS.scale, "scale") if FLAGS.scale else tuple(config.data.scale)
    input_size = parse_size(FLAGS.input_size, "input_size") if FLAGS.input_size else None
    data = config.get("data") or {}
    ids = category_ids(int(config.model.num_classes), data.get("category_ids"))
    from tfdet.serving import ServingModule, build_serving_model, export
    from tfdet.serving.export import check_target
    from tfdet.serving.module import INPUT_TYPES, PADS, SIZE_RULES

    unknown = [t for t in FLAGS.input_type if t not in INPUT_TYPES]
    if unknown or not FLAGS.input_type:
        raise app.UsageError(f"--input_type must be one or more of {','.join(INPUT_TYPES)}, got "
                             f"{','.join(FLAGS.input_type) or 'nothing'}.")
    size_rule, pad = data.get("size_rule", "round"), data.get("serving_pad", "square")
    for field, value, allowed in (("size_rule", size_rule, SIZE_RULES), ("serving_pad", pad, PADS)):
        if value not in allowed:
            raise ValueError(f"config.data.{field} must be one of {', '.join(allowed)}, got {value!r}.")
    version = check_target(FLAGS.export_dir, FLAGS.version)  # before the model is built
    if not FLAGS.checkpoint:
        print("export.py: warning: no --checkpoint: exporting freshly initialised weights (for smoke tests only).",
              file=sys.stderr, flush=True)
    model = build_serving_model(config, ops=FLAGS.ops, checkpoint=FLAGS.checkpoint or None)
    module = ServingModule(model, scale=scale, category_ids=ids, mask_output=FLAGS.mask_output,
                           input_size=input_size, pad_to_multiple=data.get("pad_to_multiple", 32),
                           size_rule=size_rule, pad=pad)
    path = export(module, FLAGS.export_dir, version=version, input_types=FLAGS.input_type,
                  model_name=FLAGS.model_name, with_warmup=FLAGS.warmup)
    print(path)


if __name__ == "__main__":
    cli.run(main, config_flag=_CONFIG)
