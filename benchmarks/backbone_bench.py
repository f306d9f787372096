"""Backbones on CPU at detection size: forward and forward+backward time per image, peak memory.

    python -m benchmarks.backbone_bench [--variants resnet50,fishnet99] [--repeats 3] [--no-memory]

Input: one 800 x 1344 image (800 x 1333 padded to a multiple of 32, as detectors pad; FishNet
requires it). Backbones are built as detectors use them: frozen_bn, frozen_stages=1, outputs C2-C5.
fwd runs model(x, training=False); fwd+bwd also takes gradients of a scalar over all levels w.r.t.
the trainable weights. Both inside tf.function; median seconds in this one process, ratios against
resnet50. DCN variants (c3-c5 deformable 3x3, as mmdetection's dconv/mdconv configs) run only when
tfdet.layers has the deformable layers. Peak RSS comes from a fresh process per variant running
fwd+bwd once (includes TensorFlow's own baseline).

Measured 2026-11-21, idle 2-core CPU, TF 2.21, repeats 3 (one run):
             backbone  fwd s/img  ratio  fwd+bwd s/img  ratio  peak RSS MiB
             resnet50      0.805   1.00          1.912   1.00          1681
            resnet101      1.562   1.94          3.628   1.90          2251
     resnext101_32x4d      2.937   3.65        156.083  81.64          3189
            fishnet99      0.882   1.10          2.128   1.11          2280
           fishnet150      1.215   1.51          2.968   1.55          2869
 resnet50_dconv_c3-c5      0.852   1.06          2.386   1.25          2312
resnet50_mdconv_c3-c5      0.861   1.07          2.387   1.25          2293
That ResNeXt row is Keras' own grouped Conv2D, which Keras compiles with XLA: on CPU XLA's gradient of
a grouped conv is pathological. tfdet's ResNeXt now uses tfdet.layers.GroupedConv2D (TensorFlow's
oneDNN grouped kernels); rerun (--variants resnet50,resnext101_32x4d, same day):
        backbone  fwd s/img  ratio  fwd+bwd s/img  ratio  peak RSS MiB
        resnet50      1.344   1.00          1.815   1.00          1667
resnext101_32x4d      2.934   2.18          6.716   3.70          2621
(fwd+bwd 156 s -> 6.7 s; resnet50's forward in this run was slower than in the table above.)
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import tfdet.layers  # noqa: E402
from benchmarks.common import peak_rss_mib, print_table, report_own_peak_rss, time_call  # noqa: E402
from tfdet.modeling.backbones import build_backbone  # noqa: E402

C3_C5 = (False, True, True, True)
VARIANTS = {
    "resnet50": {"type": "ResNet", "depth": 50},
    "resnet101": {"type": "ResNet", "depth": 101},
    "resnext101_32x4d": {"type": "ResNeXt", "depth": 101, "groups": 32, "base_width": 4},
    "fishnet99": {"type": "FishNet", "depth": 99},
    "fishnet150": {"type": "FishNet", "depth": 150},
    "resnet50_dconv_c3-c5": {"type": "ResNet", "depth": 50, "stage_with_dcn": C3_C5,
                             "dcn": {"modulated": False, "deformable_groups": 1}},
    "resnet50_mdconv_c3-c5": {"type": "ResNet", "depth": 50, "stage_with_dcn": C3_C5,
                              "dcn": {"modulated": True, "deformable_groups": 1}},
}
SIZE = (800, 1344)


def available(name):
    return "dcn" not in VARIANTS[name] or hasattr(tfdet.layers, "ModulatedDeformConv2D")


def build(name, mode):
    """A no-argument callable running one variant once, blocking until the result is ready."""
    model = build_backbone({**VARIANTS[name], "norm": "frozen_bn", "frozen_stages": 1})
    x = tf.random.stateless_normal([1, *SIZE, 3], seed=[0, 1])

    @tf.function
    def forward():
        return model(x, training=False)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(v) for v in model(x, training=True).values()])
        return tape.gradient(loss, model.trainable_weights)

    run = forward if mode == "fwd" else forward_backward
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), run())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    if args.measure_memory:
        build(json.loads(args.measure_memory), "fwd+bwd")()
        report_own_peak_rss()
        return
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    skipped = [n for n in names if not available(n)]
    names = [n for n in names if available(n)]
    base = names[0] if "resnet50" not in names else "resnet50"
    names = [base] + [n for n in names if n != base]  # the ratio base runs first
    header = ["backbone", "fwd s/img", "ratio", "fwd+bwd s/img", "ratio", "peak RSS MiB"]
    print(f"CPU, 1 x {SIZE[0]} x {SIZE[1]} image, {os.cpu_count()} cores; ratios against {base}", flush=True)
    times, rows = {}, []
    for name in names:  # one line per backbone as soon as it is measured (full runs take many minutes)
        for mode in ("fwd", "fwd+bwd"):
            times[name, mode] = time_call(build(name, mode), warmup=1, repeats=args.repeats)
        memory = "-" if args.no_memory else f"{peak_rss_mib('benchmarks.backbone_bench', name):.0f}"
        rows.append([name, f"{times[name, 'fwd']:.3f}", f"{times[name, 'fwd'] / times[base, 'fwd']:.2f}",
                     f"{times[name, 'fwd+bwd']:.3f}", f"{times[name, 'fwd+bwd'] / times[base, 'fwd+bwd']:.2f}",
                     memory])
        print("  ".join([f"{h}={v}" for h, v in zip(header, rows[-1])]), flush=True)
    print_table(header, rows)
    if skipped:
        print(f"skipped (tfdet.layers has no deformable conv layers in this build): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
