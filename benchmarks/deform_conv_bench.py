"""Deformable convolution: fused vs composite, and vs a plain tf.nn.conv2d of the same shape.

    python -m benchmarks.deform_conv_bench [--repeats 5] [--no-memory | --no-timing] [--small]

Sizes are the c3/c4 stages of ResNet-50 on an 800x1333 input (stride 8 and 16) with 3x3 kernels,
modulated (DCN v2), deformable_groups 1 and 4. Every variant runs as a tf.function in this one
process after warm-up; the table reports median times and the ratios between them, and (unless
--no-memory) the peak resident memory of forward+backward, each variant in a fresh process.

"ceiling" is composite f+b / conv2d f+b: the composite/fused ratio a fused kernel would reach if its
sampling cost nothing. Forward+backward of any (deformable) convolution does the three GEMMs a plain
convolution does (output, grad input, grad kernel), and tf.nn.conv2d runs them through oneDNN, so
no fused kernel built on the same GEMMs can beat the ceiling.

Measured on the 2-core dev machine (idle, TF 2.21, 5 repeats, seconds; peak RSS MiB of one f+b):

    case                  fused fwd  comp fwd  conv2d fwd  fused f+b  comp f+b  conv2d f+b  comp/fused f+b  ceiling
    c3 1x100x168x256 dg1     0.0740    0.1933      0.0687     0.2131    0.6219      0.1556            2.92     4.00
    c3 1x100x168x256 dg4     0.0707    0.2124      0.0708     0.2267    0.6752      0.1550            2.98     4.36
    c4 1x50x84x512 dg1       0.0589    0.1136      0.0935     0.1449    0.3292      0.1370            2.27     2.40
    c4 1x50x84x512 dg4       0.0565    0.1218      0.0855     0.1512    0.3684      0.1330            2.44     2.77
    peak MiB (fused / composite / conv2d): c3 982 / 2124 / 974, 1002 / 2519 / 996; c4 823 / 1462 / 850, 822 / 1493 / 847

Fused forward is 0.6-1.1x conv2d (1.9-3.0x faster than the composite); fused f+b is 1.1-1.5x conv2d
f+b, i.e. 68-95% of the ceiling, with the memory of a plain convolution (the composite needs 1.8-2.5x).
A 5x target is out of reach of any kernel here: a plain convolution's forward+backward alone is 23-42%
of the composite's time. Inside the fused f+b at c3 dg1: im2col 17 ms (twice: the backward recomputes
the columns rather than keeping 155 MB alive), col2im 49 ms, the three GEMMs 50 + 56-66 + 66 ms.
"""

import argparse
import json
import sys

import numpy as np
import tensorflow as tf

from benchmarks.common import peak_rss_mib, print_table, report_own_peak_rss, time_call
from tfdet.ops.deform_conv import deform_conv2d

SIZES = {"c3": (1, 100, 168, 256), "c4": (1, 50, 84, 512)}
SMALL_SIZES = {"c3/4": (1, 25, 42, 256), "c4/4": (1, 13, 21, 512)}


def make_inputs(shape, deformable_groups, seed=0):
    n, h, w, c = shape
    rng = np.random.default_rng(seed)
    taps = deformable_groups * 9
    return dict(inputs=tf.constant(rng.normal(size=shape), tf.float32),
                offsets=tf.constant(2.0 * rng.normal(size=(n, h, w, 2 * taps)), tf.float32),
                mask=tf.constant(rng.uniform(size=(n, h, w, taps)), tf.float32),
                kernel=tf.constant(0.01 * rng.normal(size=(3, 3, c, c)), tf.float32))


def make_fns(variant, deformable_groups):
    """(forward, forward+backward) tf.functions of one variant: 'fused', 'composite' or 'conv2d'."""

    def forward(inputs, offsets, mask, kernel):
        if variant == "conv2d":
            return tf.nn.conv2d(inputs, kernel, strides=1, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
        return deform_conv2d(inputs, offsets, kernel, mask, padding=1, deformable_groups=deformable_groups,
                             impl=variant)

    def forward_backward(inputs, offsets, mask, kernel):
        with tf.GradientTape() as tape:
            tape.watch([inputs, offsets, mask, kernel])
            loss = tf.reduce_sum(forward(inputs, offsets, mask, kernel))
        return tape.gradient(loss, [inputs, offsets, mask, kernel] if variant != "conv2d" else [inputs, kernel])

    return tf.function(forward), tf.function(forward_backward)


def run_once(variant_spec):
    """--measure-memory: one forward+backward of one variant, then print the peak RSS."""
    spec = json.loads(variant_spec)
    args = make_inputs(tuple(spec["shape"]), spec["dg"])
    _, fwd_bwd = make_fns(spec["variant"], spec["dg"])
    [t.numpy() for t in fwd_bwd(**args)]
    report_own_peak_rss()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--small", action="store_true", help="quarter-resolution sizes (a quick check)")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        run_once(args.measure_memory)
        return
    sizes = SMALL_SIZES if args.small else SIZES
    print(f"TF {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}"
          f", {args.repeats} repeats, median seconds")
    rows = []
    for name, shape in ({} if args.no_timing else sizes).items():
        for dg in (1, 4):
            data = make_inputs(shape, dg)
            times = {}
            for variant in ("fused", "composite", "conv2d"):
                fwd, fwd_bwd = make_fns(variant, dg)
                times[variant, "fwd"] = time_call(lambda: fwd(**data).numpy(), warmup=1, repeats=args.repeats)
                times[variant, "fb"] = time_call(lambda: [t.numpy() for t in fwd_bwd(**data)], warmup=1,
                                                 repeats=args.repeats)
            row = [f"{name} {'x'.join(map(str, shape))} dg{dg}",
                   f"{times['fused', 'fwd']:.4f}", f"{times['composite', 'fwd']:.4f}", f"{times['conv2d', 'fwd']:.4f}",
                   f"{times['fused', 'fb']:.4f}", f"{times['composite', 'fb']:.4f}", f"{times['conv2d', 'fb']:.4f}",
                   f"{times['composite', 'fwd'] / times['fused', 'fwd']:.2f}",
                   f"{times['composite', 'fb'] / times['fused', 'fb']:.2f}",
                   f"{times['fused', 'fwd'] / times['conv2d', 'fwd']:.2f}",
                   f"{times['fused', 'fb'] / times['conv2d', 'fb']:.2f}",
                   f"{times['composite', 'fb'] / times['conv2d', 'fb']:.2f}"]
            rows.append(row)
            sys.stdout.flush()
    if rows:
        print_table(["case", "fused fwd", "comp fwd", "conv2d fwd", "fused f+b", "comp f+b", "conv2d f+b",
                     "comp/fused fwd", "comp/fused f+b", "fused/conv2d fwd", "fused/conv2d f+b", "ceiling"], rows)
    if args.no_memory:
        return
    print("\nPeak resident memory (MiB) of one forward+backward, each in a fresh process:")
    memory_rows = []
    for name, shape in sizes.items():
        for dg in (1, 4):
            memory_rows.append([f"{name} {'x'.join(map(str, shape))} dg{dg}"] + [
                f"{peak_rss_mib('benchmarks.deform_conv_bench', {'variant': v, 'shape': list(shape), 'dg': dg}):.0f}"
                for v in ("fused", "composite", "conv2d")])
    print_table(["case", "fused", "composite", "conv2d"], memory_rows)


if __name__ == "__main__":
    main()
