"""Faster and Mask R-CNN R50-FPN on CPU at 800 x 1333: inference latency and train step time per image,
fused vs composite ops, peak memory.

    python -m benchmarks.detector_bench [--variants faster_rcnn,mask_rcnn] [--impls fused,composite]
                                        [--repeats 3] [--model-garden-python /tmp/tfm/bin/python]

Input: one image 800 x 1333 padded to 800 x 1344 (image_info valid size 800 x 1333), 8 ground-truth
boxes (with 112 x 112 box-cropped masks for Mask R-CNN, as tfdet.data.pipeline gives them). Models are
the configs' full-size r50 variants with random weights (inference therefore runs on the
1000 proposals and up to 100 detections the untrained heads produce; score threshold 0.05).
`infer` is tf.function(model.predict_step), `train` tf.function(trainer.train_step) with SGD; median
seconds; ratios are composite / fused. Each variant runs in a fresh process (one after the other in
one run), which also reports its peak RSS (VmHWM: model, traces, inference and training).
--model-garden-python adds TF Model Garden's Mask R-CNN (inference only) from a side environment that
has tf-models-official (benchmarks/model_garden_bench.py), its ratio against tfdet's fused Mask R-CNN.

Measured 2026-11-21, idle 2-core CPU, TF 2.21, repeats 3 (one run):
      model        ops  infer s/img  ratio  train s/img  ratio  peak RSS MiB
faster_rcnn      fused         2.01   1.00         5.02   1.00          2674
faster_rcnn  composite         2.35   1.17         5.14   1.02          3211
  mask_rcnn      fused         2.19   1.00         6.05   1.00          3085
  mask_rcnn  composite         2.64   1.20         6.16   1.02          5950
The fused ops save 15-17% of inference time and, in training, half of Mask R-CNN's peak memory; the
step time is dominated by the ResNet-50 backbone on CPU (benchmarks.backbone_bench), so the RoIAlign
speed-up (11x fwd+bwd, benchmarks.roi_align_bench) moves it by 2%.
With --variants mask_rcnn --impls fused --model-garden-python (same day, one run):
                                        model      ops  infer s/img  ratio  peak RSS MiB
                                    mask_rcnn    fused         2.26   1.00          3221
mask_rcnn (Model Garden, TF 2.20.0, 832x1344)  its own         3.13   1.39          3310
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import own_peak_rss_mib, print_table, time_call  # noqa: E402
from configs import faster_rcnn, mask_rcnn  # noqa: E402
from tfdet.engine import Trainer  # noqa: E402
from tfdet.modeling.detectors import build_detector  # noqa: E402
from tfdet.ops import loader  # noqa: E402

CONFIGS = {"faster_rcnn": faster_rcnn, "mask_rcnn": mask_rcnn}
PADDED, VALID = (800, 1344), (800, 1333)


def batch():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 600, (1, 8, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 400, (1, 8, 2))], -1).clip(0, VALID[0]).astype(np.float32)
    return dict(images=tf.constant(rng.uniform(0, 255, (1, *PADDED, 3)), tf.float32),
                image_info=tf.constant([[VALID, [1.0, 1.0], VALID]], tf.float32),
                gt_boxes=tf.constant(boxes), gt_classes=tf.constant(rng.integers(0, 80, (1, 8)), tf.int32),
                gt_is_crowd=tf.zeros((1, 8), tf.bool),
                gt_masks=tf.constant(rng.integers(0, 2, (1, 8, 112, 112)), tf.uint8))


def build(variant):
    """(infer, train) no-argument callables for {"model": ..., "impl": ...}."""
    cfg = CONFIGS[variant["model"]].get_config("backbone=r50")
    cfg.model.ops_impl = variant["impl"]
    model = build_detector(cfg.model)
    trainer = Trainer(model, optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    data = batch()
    infer, train = tf.function(model.predict_step), tf.function(trainer.train_step)
    return (lambda: tf.nest.map_structure(lambda t: t.numpy(), infer(data)),
            lambda: tf.nest.map_structure(lambda t: t.numpy(), train(data)))


def run_variant(variant, repeats):
    """Times one variant and returns {"infer", "train", "rss"} (this process's VmHWM at the end)."""
    infer, train = build(variant)
    result = {"infer": time_call(infer, warmup=1, repeats=repeats), "train": time_call(train, warmup=1, repeats=repeats)}
    result["rss"] = own_peak_rss_mib()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-variant", help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(CONFIGS))
    parser.add_argument("--impls", default="fused,composite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-garden-python", default="",
                        help="a Python with tf-models-official: add Model Garden's Mask R-CNN inference")
    args = parser.parse_args()
    if args.run_variant:
        print(json.dumps(run_variant(json.loads(args.run_variant), args.repeats)))
        return
    impls = [i for i in args.impls.split(",") if i]
    if "fused" in impls and loader.library_status().module is None:
        print("fused ops not loaded: measuring composite only")
        impls = [i for i in impls if i != "fused"]
    rows, results = [], {}
    for name in [n for n in args.variants.split(",") if n]:
        for impl in impls:
            variant = json.dumps({"model": name, "impl": impl})
            proc = subprocess.run([sys.executable, "-m", "benchmarks.detector_bench", "--run-variant", variant,
                                   "--repeats", str(args.repeats)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
            r = results[name, impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            base = results.get((name, "fused"), r)
            rows.append([name, impl, f"{r['infer']:.2f}", f"{r['infer'] / base['infer']:.2f}", f"{r['train']:.2f}",
                         f"{r['train'] / base['train']:.2f}", f"{r['rss']:.0f}"])
            print("done:", " ".join(rows[-1]), flush=True)
    if args.model_garden_python:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_garden_bench.py")
        proc = subprocess.run([args.model_garden_python, script, "--repeats", str(args.repeats)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"Model Garden benchmark failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = results.get(("mask_rcnn", "fused"), r)
        rows.append([f"mask_rcnn (Model Garden, TF {r['tensorflow']}, {r['size'][0]}x{r['size'][1]})", "its own",
                     f"{r['infer']:.2f}", f"{r['infer'] / base['infer']:.2f}", "-", "-", f"{r['rss']:.0f}"])
        print("done:", " ".join(rows[-1]), flush=True)
    print(f"CPU, 1 x {PADDED[0]} x {PADDED[1]} image, {os.cpu_count()} cores; ratios against the fused ops")
    print_table(["model", "ops", "infer s/img", "ratio", "train s/img", "ratio", "peak RSS MiB"], rows)


if __name__ == "__main__":
    main()
