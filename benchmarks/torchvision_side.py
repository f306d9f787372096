"""torchvision Mask R-CNN R50-FPN inference on CPU: the torchvision half of the zoo benchmark (a converted
model in tfdet against torchvision itself, same weights and input, 800 x 1333). Side environment only:

    /work/side/ref/bin/python -m benchmarks.torchvision_side [--repeats 3] [--threads N]

prints the CPU, then one JSON line {"infer": median s, "rss": peak MiB, "size": network input [h, w], ...}.

Weights: the synthetic, calibrated weights of tests/zoo/fixtures/torchvision/maskrcnn_resnet50_fpn.npz (meta
`keys` / `seed` / `overrides` through tfdet/zoo/synthetic.py, BN statistics from the fixture), i.e. exactly
what the tfdet side will load. Input: one synthetic 800 x 1333 image (shapes and texture), which
torchvision's transform keeps at 800 x 1333 and pads to 800 x 1344; inference includes the transform,
the RPN, 100 detections and their pasted masks, as `model([image])` returns them.
"""

import argparse
import json
import platform
import time

import numpy as np
import torch

from benchmarks.common import own_peak_rss_mib, time_call
from tools.zoo_reference import common, torchvision_ref

NAME = "maskrcnn_resnet50_fpn"
SIZE = (800, 1333)


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def build():
    """The fixture's model at the benchmark's 800 / 1333 setting, with the fixture's weights."""
    meta, arrays = common.read_fixture(common.FIXTURES / "torchvision" / f"{NAME}.npz")
    settings = dict(meta["settings"], min_size=SIZE[0], max_size=SIZE[1])
    model = torchvision_ref.MODELS[NAME]["build"](settings).eval()
    weights = common.synthetic.synthetic_state_dict(meta["keys"], meta["seed"], meta["overrides"])
    weights.update({k[3:]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("bn/")})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({torch.get_num_threads()} torch threads, torch {torch.__version__})")
    model = build()
    image = torchvision_ref.to_input(common.synthetic.synthetic_image(*SIZE, seed=800))
    with torch.no_grad():
        start = time.perf_counter()
        out = model([image])[0]
        first = time.perf_counter() - start
        infer = time_call(lambda: model([image]), warmup=0, repeats=args.repeats)
    print(json.dumps({"infer": infer, "first": first, "rss": own_peak_rss_mib(), "size": list(SIZE),
                      "detections": int(len(out["scores"])), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
