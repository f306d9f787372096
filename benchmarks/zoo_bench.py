"""A converted torchvision Mask R-CNN R50-FPN in tfdet against torchvision itself: CPU inference at 800 x 1333,
the same weights and input, measured in one run (the two sides alternate, so machine load affects both).

    .venv/bin/python -m benchmarks.zoo_bench --side_python /work/side/ref/bin/python [--rounds 2] [--repeats 3]

The torchvision side is benchmarks/torchvision_side.py in the side environment (torch + torchvision; see
tools/zoo_reference/README.md); this process runs the tfdet side. Weights: the synthetic, calibrated
weights of tests/zoo/fixtures/torchvision/maskrcnn_resnet50_fpn.npz, converted by tfdet.zoo.torchvision.
Input: the same synthetic 800 x 1333 image, padded to 800 x 1344 as torchvision's transform pads it.
Each side's time covers what `model([image])` returns in torchvision: the network and 100 detections with
masks pasted into the image (tfdet: `detect` in a tf.function, then paste_masks with the converted config's
torchvision rule, in the same tf.function). Prints the CPU, each round's medians and the ratio.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "maskrcnn_resnet50_fpn"
SIZE, PADDED = (800, 1333), (800, 1344)


def build_tfdet():
    """A tf.function running the converted model on the benchmark image; returns (fn, number of detections)."""
    import tensorflow as tf

    from tests.zoo import fixtures_io
    from tests.zoo.test_torchvision_models import fixture_state_dict
    from tfdet.engine.checkpoint import weights_by_path
    from tfdet.modeling.detectors import build_detector
    from tfdet.modeling.roi_heads.mask_head import paste_masks
    from tfdet.zoo import synthetic
    from tfdet.zoo import torchvision as tv

    meta, arrays = fixtures_io.load("torchvision", NAME)
    state = fixture_state_dict(meta, arrays)
    model = build_detector(tv.tfdet_config(NAME).model)
    variables = weights_by_path(model)
    for path, value in tv.convert(state, NAME).items():
        variables[path].assign(value)
    image = synthetic.synthetic_image(*SIZE, seed=800).astype(np.float32)
    images = tf.constant(np.pad(image, [[0, PADDED[0] - SIZE[0]], [0, PADDED[1] - SIZE[1]], [0, 0]])[None])
    sizes = tf.constant([SIZE], tf.float32)
    rule = model.model_config.mask.paste

    @tf.function
    def infer():
        out = model.detect(images, sizes)
        out["masks"] = paste_masks(out["detection_masks"], out["detection_boxes"], SIZE, rule=rule)
        return out

    return infer, int(infer()["num_detections"][0])


def torchvision_side(python, repeats):
    proc = subprocess.run([python, "-m", "benchmarks.torchvision_side", "--repeats", str(repeats)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the torchvision side failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    return lines[0], json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side_python", required=True, help="python of the side environment with torchvision")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side and round")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from benchmarks.common import time_call

    infer, detections = build_tfdet()
    rows = []
    for r in range(args.rounds):
        cpu, torch_result = torchvision_side(args.side_python, args.repeats)
        tfdet_s = time_call(infer, warmup=1, repeats=args.repeats)
        rows.append({"round": r, "torchvision s": torch_result["infer"], "tfdet s": tfdet_s,
                     "tfdet / torchvision": tfdet_s / torch_result["infer"],
                     "detections": [torch_result["detections"], detections]})
        print(json.dumps(rows[-1]), flush=True)
    import tensorflow as tf

    print(f"{cpu}; TensorFlow {tf.__version__}, oneDNN {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}")
    ratios = sorted(row["tfdet / torchvision"] for row in rows)
    print(f"tfdet / torchvision inference time at {SIZE[0]}x{SIZE[1]}: median {ratios[len(ratios) // 2]:.2f} "
          f"over {len(rows)} rounds")


if __name__ == "__main__":
    main()
