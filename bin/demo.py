"""The main job (`bin/demo`): a small Mask R-CNN trained, evaluated, exported and drawn, end to end on CPU.

    1. data      the embedded shapes dataset in COCO format (generated on first use, cached)
    2. train     bin/train.py    --config=configs/mask_rcnn.py:tiny --workdir=<out>/train
    3. evaluate  bin/evaluate.py (COCO box and mask AP of the held-out split, printed as tables)
    4. export    bin/export.py   (a TF Serving SavedModel of stock TF ops under <out>/export/<version>)
    5. predict   bin/predict.py  (the exported model on validation images, drawn to <out>/predictions/*.png)

Each stage is the command a user would run (printed before it runs). A second run resumes: training
finds its last checkpoint and stops at once, the export adds a version. <out>/summary.json holds the
metrics and the time of each stage.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("out", "demo", "output folder (relative to the repository root)")
flags.DEFINE_string("config", "configs/mask_rcnn.py:tiny", "the model, data and schedule")
flags.DEFINE_multi_string("override", [], "extra --config.x.y=value for training, e.g. train.epochs=4")
flags.DEFINE_integer("render", 8, "validation images drawn with the exported model's predictions")
FLAGS = flags.FLAGS

TARGETS = {"bbox": 0.5, "segm": 0.4}  # COCO AP on the held-out split (the demo's accuracy targets)


def run(stage, script, *args):
    """Runs bin/<script> with `args`, echoing the command; returns its wall time in seconds."""
    command = [sys.executable, os.path.join("bin", script), *args]
    print(f"\n=== {stage}: {shlex.join(['.venv/bin/python', *command[1:]])}", flush=True)
    start = time.time()
    proc = subprocess.run(command, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"demo: {stage} failed (exit status {proc.returncode}); see its messages above. Everything written "
                 f"so far is kept under {FLAGS.out}/ (rerun bin/demo to resume).")
    return time.time() - start


def main(argv):
    del argv
    from tfdet.data import shapes

    os.chdir(ROOT)
    out = FLAGS.out
    times = {}
    start = time.time()
    print(f"=== data: the shapes dataset in COCO format under {shapes.default_root()}", flush=True)
    split = shapes.ensure_shapes()["val"]
    times["data"] = time.time() - start
    config = [f"--config={FLAGS.config}"]
    workdir = os.path.join(out, "train")
    verbose = "1" if sys.stdout.isatty() else "2"  # a progress bar on a terminal, a line per 50 steps in a log
    times["train"] = run("train", "train.py", *config, *(f"--config.{o}" for o in FLAGS.override),
                         f"--workdir={workdir}", f"--verbose={verbose}")
    results = os.path.join(out, "eval", "results.json")
    times["evaluate"] = run("evaluate", "evaluate.py", *config, f"--checkpoint={workdir}",
                            f"--annotations={split.ann_file}", f"--images={split.image_dir}", f"--output={results}")
    export_dir = os.path.join(out, "export")
    times["export"] = run("export", "export.py", *config, f"--checkpoint={workdir}", f"--export_dir={export_dir}",
                          f"--annotations={split.ann_file}")
    images = sorted(os.listdir(split.image_dir))[:FLAGS.render]
    render_dir = os.path.join(out, "predictions")
    times["predict"] = run("predict", "predict.py", f"--saved_model={export_dir}",
                           f"--images={','.join(os.path.join(split.image_dir, f) for f in images)}",
                           f"--annotations={split.ann_file}", f"--output={os.path.join(out, 'predictions.json')}",
                           f"--render_dir={render_dir}")
    times["total"] = time.time() - start
    summarize(out, results, times, render_dir)


def summarize(out, results, times, render_dir):
    with open(results.replace(".json", ".metrics.json")) as f:
        metrics = json.load(f)
    ap = {kind: metrics[kind]["metrics"]["AP"] for kind in TARGETS if kind in metrics}
    summary = dict(ap=ap, targets=TARGETS, seconds={k: round(v, 1) for k, v in times.items()})
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n=== summary")
    for kind, target in TARGETS.items():
        value = ap.get(kind, float("nan"))
        print(f"  {'box' if kind == 'bbox' else 'mask'} AP {value:.3f}  (target >= {target}: "
              f"{'met' if value >= target else 'NOT met'})")
    print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"  drawings: {render_dir}/*.png   summary: {out}/summary.json")


if __name__ == "__main__":
    app.run(main)
