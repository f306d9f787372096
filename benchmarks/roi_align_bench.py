"""RoIAlign benchmark: fused vs composite, forward and forward+backward, at Mask R-CNN sizes.

    python -m benchmarks.roi_align_bench            # 800x1333 input, P2-P5 x 256 channels, 512 RoIs
    python -m benchmarks.roi_align_bench --quick    # smaller, for a smoke run

Boxes are drawn log-uniformly in size (16 to 800 px) so that all four FPN levels are used, as in a
Mask R-CNN's RoI heads. Every variant runs in this one process (ratios are measured in one run);
peak memory is measured per variant in a fresh process.
"""

import argparse
import json
import sys

import numpy as np
import tensorflow as tf

from benchmarks.common import peak_rss_mib, print_table, report_own_peak_rss, time_call
from tfdet.layers import MultiLevelRoIAlign
from tfdet.ops import library_status


def make_inputs(height, width, channels, num_rois, seed=0):
    rng = np.random.default_rng(seed)
    features = [tf.constant(rng.normal(size=(1, -(-height // 2**lvl), -(-width // 2**lvl), channels)), tf.float32)
                for lvl in range(2, 6)]
    size = np.exp(rng.uniform(np.log(16), np.log(800), (num_rois, 2)))
    x1 = rng.uniform(0, width - 16, num_rois)
    y1 = rng.uniform(0, height - 16, num_rois)
    boxes = np.stack([x1, y1, np.minimum(x1 + size[:, 0], width), np.minimum(y1 + size[:, 1], height)], -1)
    return features, tf.constant(boxes[None], tf.float32)


def make_fns(impl, output_size, features, boxes):
    layer = MultiLevelRoIAlign(output_size=output_size, impl=impl)
    upstream = tf.random.stateless_normal([1, boxes.shape[1], output_size, output_size, features[0].shape[-1]],
                                          seed=[1, 2])

    @tf.function
    def forward():
        return layer(features, boxes)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = tf.reduce_sum(layer(features, boxes) * upstream)
        return tape.gradient(loss, features)

    return forward, forward_backward


def variants(quick):
    for output_size in (7, 14):
        for impl in ("fused", "composite"):
            for mode in ("forward", "forward+backward"):
                yield {"impl": impl, "output_size": output_size, "mode": mode, "quick": quick}


def sizes(quick):
    return (400, 667, 64, 128) if quick else (800, 1333, 256, 512)


def run_variant(v, inputs):
    forward, forward_backward = make_fns(v["impl"], v["output_size"], *inputs)
    fn = forward if v["mode"] == "forward" else forward_backward
    return time_call(lambda: [t.numpy() for t in tf.nest.flatten(fn())], warmup=1, repeats=3 if v["quick"] else 5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory runs")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:  # child process of peak_rss_mib
        v = json.loads(args.measure_memory)
        run_variant(v, make_inputs(*sizes(v["quick"])))
        report_own_peak_rss()
        return
    status = library_status()
    if not status.loaded:
        sys.exit(f"the fused library is not loaded ({status.reason}); build it first (bin/setup_env)")
    height, width, channels, num_rois = sizes(args.quick)
    print(f"RoIAlign, input {height}x{width}, P2-P5 x {channels} channels, {num_rois} RoIs, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'all'} threads, TF {tf.__version__}")
    inputs = make_inputs(height, width, channels, num_rois)
    timings = {}
    for v in variants(args.quick):
        timings[(v["output_size"], v["mode"], v["impl"])] = (run_variant(v, inputs), v)
    rows = []
    for (output_size, mode, impl), (seconds, v) in sorted(timings.items()):
        if impl != "fused":
            continue
        composite = timings[(output_size, mode, "composite")][0]
        mem = ("-", "-") if args.no_memory else tuple(
            f"{peak_rss_mib('benchmarks.roi_align_bench', dict(v, impl=i)):.0f}" for i in ("fused", "composite"))
        rows.append((f"{output_size}x{output_size}", mode, f"{seconds * 1e3:.1f}", f"{composite * 1e3:.1f}",
                     f"{composite / seconds:.1f}x", *mem))
    print_table(("output", "pass", "fused ms", "composite ms", "speed-up", "fused MiB", "composite MiB"), rows)


if __name__ == "__main__":
    main()
