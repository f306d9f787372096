"""CARAFE on CPU: fused kernel vs composite stock-TF twin, and the whole CARAFE pack vs nearest / deconv.

    python -m benchmarks.carafe_bench [--repeats 5] [--no-memory] [--cases fpn,mask]

Cases (k=5, G=1, s=2, the paper's defaults):
  fpn:  1 x 50 x 84 x 256 -> 1 x 100 x 168 x 256 (FPN top-down step at stride 16 of an 800x1333 image)
  mask: 256 x 14 x 14 x 256 -> 256 x 28 x 28 x 256 (mask head of 256 RoIs)
Variants: `op-fused` / `op-composite` run tfdet.ops.carafe on given (softmax-normalized) masks;
`pack` is the CARAFEUpsample layer (compressor + encoder + shuffle + softmax + fused op); `nearest`
(UpSampling2D) and `deconv` (Conv2DTranspose 256->256, kernel 2, stride 2) produce the same output size.
Each runs forward only and forward+backward (gradients w.r.t. every input and weight) inside a
tf.function; timings are medians in this one process, ratios are against op-fused. Peak RSS (VmHWM) comes
from a fresh process per variant that runs it once, so it includes TensorFlow's own baseline.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import peak_rss_mib, print_table, report_own_peak_rss, time_call  # noqa: E402
from tfdet.layers.carafe import CARAFEUpsample, make_upsampler  # noqa: E402
from tfdet.ops.carafe import carafe  # noqa: E402

CASES = {"fpn": (1, 50, 84, 256), "mask": (256, 14, 14, 256)}
VARIANTS = ("op-fused", "op-composite", "pack", "nearest", "deconv")
MODES = ("fwd", "fwd+bwd")
K, G, S = 5, 1, 2
MODULE = "benchmarks.carafe_bench"


def build(case, variant, mode):
    """A no-argument callable running one variant once (blocking until its results are ready)."""
    n, h, w, c = CASES[case]
    features = tf.random.stateless_normal([n, h, w, c], seed=[0, 1])
    upstream = tf.random.stateless_normal([n, h * S, w * S, c], seed=[0, 2])
    if variant.startswith("op-"):
        impl = variant[3:]
        logits = tf.random.stateless_normal([n, h * S, w * S, G, K * K], seed=[0, 3])
        masks = tf.reshape(tf.nn.softmax(logits), [n, h * S, w * S, G * K * K])
        inputs = [features, masks]
        forward = lambda f, m: carafe(f, m, K, G, S, impl=impl)  # noqa: E731
        weights = []
    else:
        layer = {"pack": lambda: CARAFEUpsample(S, up_kernel=K, up_group=G),
                 "nearest": lambda: make_upsampler("nearest", S),
                 "deconv": lambda: make_upsampler("deconv", S, channels=c)}[variant]()
        layer.build(features.shape)
        inputs = [features]
        forward = layer
        weights = layer.trainable_variables

    @tf.function
    def run(*args):
        if mode == "fwd":
            return forward(*args)
        with tf.GradientTape() as tape:
            tape.watch(list(args))
            loss = tf.reduce_sum(forward(*args) * upstream)
        return tape.gradient(loss, [*args, *weights])

    return lambda: tf.nest.map_structure(lambda t: t.numpy(), run(*inputs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="fpn,mask")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    if args.measure_memory:
        v = json.loads(args.measure_memory)
        build(v["case"], v["variant"], v["mode"])()
        report_own_peak_rss()
        return
    keras.utils.set_random_seed(0)
    print(f"tf {tf.__version__}, {os.cpu_count()} CPUs, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}", file=sys.stderr)
    for case in args.cases.split(","):
        n, h, w, c = CASES[case]
        print(f"\n{case}: {n}x{h}x{w}x{c} -> {n}x{h * S}x{w * S}x{c}  (k={K}, G={G}, s={S})")
        rows = []
        for mode in MODES:
            base = None
            for variant in VARIANTS:
                seconds = time_call(build(case, variant, mode), warmup=2, repeats=args.repeats)
                base = base or seconds
                memory = "-"
                if not args.no_memory:
                    memory = f"{peak_rss_mib(MODULE, dict(case=case, variant=variant, mode=mode)):.0f}"
                rows.append((mode, variant, f"{seconds * 1e3:.1f}", f"{seconds / base:.2f}", memory))
        print_table(("mode", "variant", "ms", "x op-fused", "peak RSS MiB"), rows)


if __name__ == "__main__":
    main()
