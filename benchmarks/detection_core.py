"""Detection-core ops at COCO scale on this machine (graph mode): python -m benchmarks.detection_core

800x1344 input, batch 2, FPN P2-P6 with 3 anchors per location (~268k anchors per image), 50 gt boxes;
R-CNN post-processing on 1000 boxes x 80 classes. Prints the median time per call and, for the NMS
variants, the ratio to hard class-wise NMS measured in the same run.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import print_table, time_call  # noqa: E402
from tfdet.modeling.dense_heads.rpn import RPN_MATCHER, rpn_proposals  # noqa: E402
from tfdet.ops import nms  # noqa: E402
from tfdet.ops.anchors import AnchorGenerator  # noqa: E402
from tfdet.ops.sampling import sample  # noqa: E402


def random_boxes(rng, shape, size):
    xy = rng.uniform(0, size, shape + (2,))
    wh = rng.uniform(8, size / 3, shape + (2,))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    batch, height, width = 2, 800, 1344
    gen = AnchorGenerator(strides=[4, 8, 16, 32, 64], scales=[8])
    sizes = [(height // s, width // s) for s in (4, 8, 16, 32, 64)]
    grid = tf.function(lambda hw: tf.concat(gen([(hw[0] // s, hw[1] // s) for s in (4, 8, 16, 32, 64)]), 0),
                       input_signature=[tf.TensorSpec([2], tf.int32)])  # a dynamic size: no constant folding
    anchors_fn = lambda: grid(tf.constant([height, width]))  # noqa: E731
    anchors = anchors_fn()
    gt_boxes = tf.constant(random_boxes(rng, (batch, 50), 700))
    gt_classes = tf.constant(rng.integers(0, 80, (batch, 50)), tf.int32)
    match_fn = tf.function(lambda: RPN_MATCHER(anchors, gt_boxes, gt_classes))
    match_xla = tf.function(lambda: RPN_MATCHER(anchors, gt_boxes, gt_classes), jit_compile=True)
    labels = match_fn().labels
    sample_fn = tf.function(lambda: sample(labels, 256, 0.5, seed=[1, 2]).mask)
    objectness = [tf.constant(rng.normal(size=(batch, h, w, 3)), tf.float32) for h, w in sizes]
    deltas = [tf.constant(rng.normal(0, 0.2, (batch, h, w, 12)), tf.float32) for h, w in sizes]
    level_anchors = gen(sizes)
    proposals_fn = tf.function(lambda: rpn_proposals(objectness, deltas, level_anchors, [[height, width]] * batch,
                                                     pre_nms_top_k=2000, max_proposals=1000).boxes)
    det_boxes = tf.constant(random_boxes(rng, (batch, 1000, 80), 700))
    det_scores = tf.constant(rng.uniform(size=(batch, 1000, 80)) ** 4, tf.float32)
    nms_fns = {m: tf.function(lambda m=m: nms.multiclass_nms(det_boxes, det_scores, 100, method=m).boxes)
               for m in ("hard", "linear", "gaussian")}

    rows = [["anchors (268k)", f"{time_call(anchors_fn) * 1e3:.1f}", ""],
            ["Max-IoU matching (268k x 50)", f"{time_call(match_fn) * 1e3:.1f}", ""],
            ["Max-IoU matching, jit_compile", f"{time_call(match_xla) * 1e3:.1f}", ""],
            ["sampling 256 @ 0.5", f"{time_call(sample_fn) * 1e3:.1f}", ""],
            ["RPN proposals (2000/level -> 1000)", f"{time_call(proposals_fn) * 1e3:.1f}", ""]]
    hard = time_call(nms_fns["hard"])
    for method, fn in nms_fns.items():
        t = hard if method == "hard" else time_call(fn)
        rows.append([f"multiclass NMS {method} (1000 x 80 -> 100)", f"{t * 1e3:.1f}", f"{t / hard:.2f}"])
    print(f"batch {batch}, {height}x{width}, CPU threads: {os.cpu_count()}")
    print_table(["step", "ms / call", "vs hard NMS"], rows)


if __name__ == "__main__":
    main()
