"""TensorFlow's oneDNN CPU kernels on vs off (TF_ENABLE_ONEDNN_OPTS=1 / =0): the main job, a tiny train
step, R50-FPN inference, a ResNeXt backbone step and one grouped conv, in one run.

    python -m benchmarks.onednn_bench [--parts main_job,tiny_step,...] [--rounds 2] [--repeats 3]

Every measurement runs in its own fresh process with the variable set, alternating on / off (each round
flips which goes first), `--rounds` times; the table gives the median over rounds and off / on.
  main_job     bin/demo.py into a fresh folder (shapes data cached): total, train, evaluate, export and
               predict seconds (summary.json) and the box / mask AP each setting reaches
  tiny_step    configs/mask_rcnn.py:tiny train step (batch 4 of the shapes data; median of 20 steps)
  faster_rcnn, mask_rcnn   R50-FPN inference at 800x1333, random weights, fused ops (detector_bench setup)
  resnext      ResNeXt-101 32x4d forward+backward at 800x1344 (backbone_bench setup: GroupedConv2D,
               native grouped kernels with oneDNN, one conv per group without)
  grouped      one 3x3, 32-group, 256-channel conv on 1x100x168: forward of the native grouped conv and
               of the per-group path (GroupedConv2D's fallback), forward+backward where it runs

Measured 2026-12-03, 2-core AMD EPYC (AVX-512 VNNI: TensorFlow's default here is on), machine shared with
other jobs (load average ~12: absolute times inflated), --rounds 2 --repeats 3, one run:
       part               metric  oneDNN on    off  off/on    each run on  each run off
   main_job              total s        437    983    2.25        481/394  1.07e+03/892
   main_job              train s        277    759    2.74        307/248       788/730
   main_job           evaluate s       35.9     49    1.37      37.2/34.5     62.7/35.4
   main_job             export s       78.8    120    1.52      86.4/71.3      156/83.4
   main_job            predict s       45.1   55.3    1.22      50.8/39.5     66.9/43.7
   main_job               box AP      0.909  0.906       -    0.909/0.909   0.906/0.906
   main_job              mask AP      0.927  0.929       -    0.927/0.927   0.929/0.929
  tiny_step               step s       0.11  0.188    1.71   0.0934/0.127   0.191/0.186
faster_rcnn              infer s       18.8   25.4    1.36      23.8/13.7     30.7/20.1
  mask_rcnn              infer s       23.5   32.4    1.38      24.4/22.6     39.3/25.5
    resnext            fwd+bwd s       43.7   53.6    1.23      40.2/47.1     37.7/69.6
    grouped         native fwd s     0.0789  0.385    4.88  0.0614/0.0964   0.368/0.402
    grouped     native fwd+bwd s      0.197      -       -    0.188/0.205             -
    grouped      per_group fwd s      0.124   0.13    1.05    0.116/0.132   0.112/0.148
    grouped  per_group fwd+bwd s       0.15  0.437    2.91   0.0859/0.215   0.468/0.406
oneDNN is faster for everything measured, so the bin/ commands turn it on (bin/_cpu_kernels.py). Each
setting reproduces its own AP exactly; the two differ in the third decimal (README, "CPU kernels").
Without oneDNN, TensorFlow's grouped conv has no gradient kernel and its forward is 3x slower than one
conv per group, GroupedConv2D's path there. With oneDNN the per-group gradient was faster than the native
one in this micro-benchmark, but ResNeXt-101 forward+backward with native forward + per-group gradient
was within this machine's noise of the native path (28.6 vs 31.0-38.7 s), so the native path stays.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("main_job", "tiny_step", "faster_rcnn", "mask_rcnn", "resnext", "grouped")
SETTINGS = {"on": "1", "off": "0"}


def measure_main_job():
    out = tempfile.mkdtemp(prefix="onednn_bench_demo_")
    try:
        proc = subprocess.run([sys.executable, os.path.join("bin", "demo.py"), f"--out={out}", "--render=2"],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"bin/demo.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result = {f"{stage} s": summary["seconds"][stage] for stage in ("total", "train", "evaluate", "export", "predict")}
    result.update({"box AP": summary["ap"]["bbox"], "mask AP": summary["ap"]["segm"]})
    return result


def measure_tiny_step():
    import tensorflow as tf

    from benchmarks.common import time_call
    from configs import mask_rcnn
    from tfdet.data import train_input as input_data
    from tfdet.engine import Trainer
    from tfdet.engine.settings import train_block
    from tfdet.modeling.detectors import build_detector

    config = mask_rcnn.get_config("tiny")
    cfg = train_block(config.train)
    source = input_data.TrainInput(config.data, cfg.batch_size, cfg.seed)
    trainer = Trainer(build_detector(config.model), cfg, max(1, source.num_images // cfg.batch_size))
    batches = iter(source.dataset().repeat())
    trainer.build_optimizer_variables()
    run = tf.function(trainer.train_step)
    return {"step s": time_call(lambda: float(run(next(batches))["loss"]), warmup=3, repeats=20)}


def measure_detector(name, repeats):
    from benchmarks import detector_bench
    from benchmarks.common import time_call

    infer, _ = detector_bench.build({"model": name, "impl": "fused"})
    return {"infer s": time_call(infer, warmup=1, repeats=repeats)}


def measure_resnext(repeats):
    from benchmarks import backbone_bench
    from benchmarks.common import time_call

    return {"fwd+bwd s": time_call(backbone_bench.build("resnext101_32x4d", "fwd+bwd"), warmup=1, repeats=repeats)}


def measure_grouped(repeats):
    import tensorflow as tf

    from benchmarks.common import time_call
    from tfdet.layers import grouped_conv

    x = tf.random.stateless_normal([1, 100, 168, 256], seed=[0, 1])
    kernel = tf.random.stateless_normal([3, 3, 8, 256], seed=[0, 2])
    result = {}
    for path in ("native", "per_group"):
        def conv(a, k, per_group=path == "per_group"):
            return grouped_conv.grouped_conv2d(a, k, 32, 1, "SAME", 1, per_group=per_group)

        def forward_backward(conv=conv):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = conv(x, kernel)
            return tape.gradient(y, [x, kernel])

        forward, both = tf.function(lambda: conv(x, kernel)), tf.function(forward_backward)
        result[f"{path} fwd s"] = time_call(lambda: forward().numpy(), warmup=1, repeats=repeats)
        if path == "per_group" or grouped_conv.cpu_has_grouped_gradients():
            result[f"{path} fwd+bwd s"] = time_call(lambda: [g.numpy() for g in both()], warmup=1, repeats=repeats)
    return result


def measure(part, repeats):
    """Runs one part in this process; returns {metric: value}."""
    from tensorflow.python.util import _pywrap_util_port

    if part == "main_job":  # the stages run in their own processes (with this process's variable)
        result = measure_main_job()
    elif part == "tiny_step":
        result = measure_tiny_step()
    elif part in ("faster_rcnn", "mask_rcnn"):
        result = measure_detector(part, repeats)
    elif part == "resnext":
        result = measure_resnext(repeats)
    else:
        result = measure_grouped(repeats)
    result["oneDNN"] = bool(_pywrap_util_port.IsMklEnabled())
    return result


def run_fresh(part, setting, repeats):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=SETTINGS[setting], TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.onednn_bench", "--measure", part, "--repeats",
                           str(repeats)], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{part} with oneDNN {setting} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if result.pop("oneDNN") != (setting == "on"):
        raise RuntimeError(f"{part}: TensorFlow did not follow TF_ENABLE_ONEDNN_OPTS={SETTINGS[setting]}")
    print(f"  {part:12s} oneDNN {setting:3s} ({time.time() - start:.0f} s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
    return result


def tf_default():
    """Whether TensorFlow turns oneDNN on here when the variable is unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
                         text=True).stdout.split()
    return "on" if out and out[-1] == "True" else "off"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure, args.repeats)), flush=True)
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    print(f"{cpu_name()}, {os.cpu_count()} cores; TensorFlow's default here: oneDNN {tf_default()}; "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    results = {(p, s): [] for p in parts for s in SETTINGS}
    for r in range(args.rounds):
        for part in parts:
            for setting in (("on", "off") if r % 2 == 0 else ("off", "on")):
                results[part, setting].append(run_fresh(part, setting, args.repeats))
    from benchmarks.common import print_table

    rows = []
    for part in parts:
        for metric in results[part, "on"][0]:
            runs = {s: [x[metric] for x in results[part, s] if metric in x] for s in SETTINGS}
            on, off = (statistics.median(runs[s]) if runs[s] else None for s in SETTINGS)
            ratio = f"{off / on:.2f}" if metric.endswith(" s") and off is not None else "-"
            rows.append([part, metric, f"{on:.3g}", "-" if off is None else f"{off:.3g}", ratio,
                         *("/".join(f"{v:.3g}" for v in runs[s]) or "-" for s in SETTINGS)])
    print(f"\nmedian of {args.rounds} fresh processes per setting; load average at end {os.getloadavg()[0]:.1f}")
    print_table(["part", "metric", "oneDNN on", "off", "off/on", "each run on", "each run off"], rows)


if __name__ == "__main__":
    main()
