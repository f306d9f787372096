"""COCO results conversion and TTA merging cost per image (host side, NumPy + pycocotools).

    python -m benchmarks.evaluation_bench            # 100 detections per 480 x 640 image
    python -m benchmarks.evaluation_bench --quick    # 30 detections

Rows: boxes only; boxes + masks as `results.detections_to_coco` does it (paste the region each mask
reaches, one pycocotools encode over the image's stack); the naive way (paste every mask into a full
image, encode one at a time) for comparison; merging 10 augmentations (5 scales x flip) by NMS with mask
averaging. All rows run in this one process, so the ratios are what to read.
"""

import argparse

import numpy as np
from pycocotools import mask as mask_utils

from benchmarks.common import print_table, time_call
from tfdet.evaluation import results, tta


def _naive_rles(masks, boxes, height, width):
    out = []
    for m, b in zip(masks, boxes):
        full = results.paste_mask(m, b, height, width)
        out.append(mask_utils.encode(np.asfortranarray(full)))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    d, height, width = (30 if args.quick else 100), 480, 640
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [width - 60, height - 60], (d, 2))
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(10, 250, (d, 2)), [width, height])], 1)
    yy, xx = np.mgrid[0:28, 0:28]
    disc = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2 < 150).astype(np.float32)
    masks = np.clip(disc + rng.normal(0, 0.1, (d, 28, 28)), 0, 1).astype(np.float32)
    out = {"num_detections": np.array([d]), "detection_boxes": boxes[None].astype(np.float32),
           "detection_scores": rng.uniform(size=(1, d)).astype(np.float32),
           "detection_classes": rng.integers(0, 80, (1, d)).astype(np.int32), "detection_masks": masks[None]}
    boxes_only = {k: v for k, v in out.items() if k != "detection_masks"}
    info = np.array([[[height, width], [1, 1], [height, width]]])
    cats = {i: i + 1 for i in range(80)}
    candidates = [{"detection_boxes": boxes + rng.uniform(-2, 2, boxes.shape),
                   "detection_scores": out["detection_scores"][0], "detection_classes": out["detection_classes"][0],
                   "detection_masks": masks} for _ in range(10)]
    timings = [
        ("boxes only", time_call(lambda: results.detections_to_coco(boxes_only, info, [1], cats), 1, 3)),
        ("boxes + masks", time_call(lambda: results.detections_to_coco(out, info, [1], cats), 1, 3)),
        ("masks, naive full-image paste", time_call(lambda: _naive_rles(masks, boxes, height, width), 1, 3)),
        ("TTA merge of 10 augmentations", time_call(lambda: tta.merge(candidates, 100), 1, 3)),
    ]
    base = timings[1][1]
    rows = [[name, f"{t * 1e3:.1f}", f"{t / base:.2f}"] for name, t in timings]
    print(f"{d} detections per {height}x{width} image, 28x28 masks")
    print_table(["variant", "ms / image", "vs boxes + masks"], rows)


if __name__ == "__main__":
    main()
