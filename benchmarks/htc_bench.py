"""Cascade Mask R-CNN and HTC R50-FPN vs Mask R-CNN on CPU at 800 x 1333: per-image inference latency
and train step time, as ratios to Mask R-CNN measured in the same run.

    python -m benchmarks.htc_bench [--variants mask_rcnn,cascade_mask_rcnn,htc] [--repeats 2] [--impl fused]

Input: detector_bench's batch (one 800 x 1333 image padded to 800 x 1344, 8 gt boxes with box-cropped
masks) plus a stride-8 semantic map for HTC. Random weights, the configs' full-size r50 variants
(HTC with its semantic branch). Median seconds of tf.function(predict_step) / tf.function(Trainer.train_step).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import own_peak_rss_mib, print_table, time_call  # noqa: E402
from benchmarks.detector_bench import PADDED, batch  # noqa: E402
from tfdet.engine import Trainer  # noqa: E402
from tfdet.modeling.detectors import build_detector  # noqa: E402


def build(name, impl):
    cfg = importlib.import_module(f"configs.{name}").get_config("backbone=r50")
    cfg.model.ops_impl = impl
    model = build_detector(cfg.model)
    trainer = Trainer(model, optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    data = batch()
    if name == "htc":
        labels = np.random.default_rng(1).integers(0, 183, (1, PADDED[0] // 8, PADDED[1] // 8))
        data["semantic"] = tf.constant(labels, tf.uint8)
    infer, train = tf.function(model.predict_step), tf.function(trainer.train_step)
    return (lambda: tf.nest.map_structure(lambda t: t.numpy(), infer(data)),
            lambda: tf.nest.map_structure(lambda t: t.numpy(), train(data)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="mask_rcnn,cascade_mask_rcnn,htc")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--impl", default=None, help="ops_impl: fused | composite (default: fused when built)")
    args = parser.parse_args()
    times = {}
    for name in [n for n in args.variants.split(",") if n]:
        infer, train = build(name, args.impl)
        times[name] = (time_call(infer, warmup=1, repeats=args.repeats),
                       time_call(train, warmup=1, repeats=args.repeats))
    base = times.get("mask_rcnn")
    rows = []
    for name, (t_infer, t_train) in times.items():
        ratio = (f"{t_infer / base[0]:.2f}", f"{t_train / base[1]:.2f}") if base else ("-", "-")
        rows.append((name, f"{t_infer:.2f}", f"{t_train:.2f}", *ratio))
    print_table(("model", "infer s/img", "train s/step", "infer / mask_rcnn", "train / mask_rcnn"), rows)
    print(f"peak RSS (whole run): {own_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
