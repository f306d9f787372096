"""Reference values of mmdetection's box-level conventions (side environment only): anchors (and the
legacy v1.x anchors), the delta box coder (and the legacy +1 coder), RoI level mapping, mask pasting,
NMS as mmdet applies it, and the score top-k of its dense heads, on fixed random inputs, so that tfdet's
pure functions are tested against mmdet's own code (tests/zoo/test_mmdet_ops.py).

    /work/side/ref/bin/python -m tools.zoo_reference.mmdet_ops_ref   # writes tests/zoo/fixtures/mmdet/ops.npz

Everything is float32 and stored under the names below; inputs come from numpy's default_rng(OPS_SEED).
"""

import sys

import numpy as np
import torch

from tools.zoo_reference import common

OPS_SEED = 2024
IMAGE = (150, 200)  # (h, w) of the image the boxes live in
ANCHOR_IMAGE = (64, 96)  # padded image of the anchor grids (small: every level stored whole)
RPN_STRIDES, RETINA_STRIDES = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128)
SIZES = {s: (-(-ANCHOR_IMAGE[0] // s), -(-ANCHOR_IMAGE[1] // s)) for s in (4, 8, 16, 32, 64, 128)}


def t(x):
    return torch.from_numpy(np.asarray(x, np.float32))


def random_boxes(rng, n, height, width, min_size=0.5, max_size=None):
    max_size = max_size or max(height, width)
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    xy = rng.uniform(-0.1 * width, 1.1 * width, size=(n, 2)) - wh / 2
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def anchors(out):
    from mmdet.models.task_modules.prior_generators import AnchorGenerator, LegacyAnchorGenerator
    gens = {
        "rpn": (AnchorGenerator(strides=RPN_STRIDES, ratios=[0.5, 1.0, 2.0], scales=[8]), RPN_STRIDES),
        "retina": (AnchorGenerator(strides=RETINA_STRIDES, ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                                   scales_per_octave=3), RETINA_STRIDES),
        "ga_square": (AnchorGenerator(strides=RPN_STRIDES, ratios=[1.0], scales=[8]), RPN_STRIDES),
        "legacy_rpn": (LegacyAnchorGenerator(strides=RPN_STRIDES, ratios=[0.5, 1.0, 2.0], scales=[8],
                                             center_offset=0.5), RPN_STRIDES),
        "legacy_retina": (LegacyAnchorGenerator(strides=RETINA_STRIDES, ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                                                scales_per_octave=3, center_offset=0.5), RETINA_STRIDES),
    }
    for name, (gen, strides) in gens.items():
        sizes = [SIZES[s] for s in strides]
        for stride, a in zip(strides, gen.grid_priors(sizes, device="cpu")):
            common.put(out, f"anchors/{name}/s{stride}", a)


def coders(rng, out):
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder, LegacyDeltaXYWHBBoxCoder
    n = 128
    rois = random_boxes(rng, n, *IMAGE, max_size=120)
    deltas = rng.normal(0.0, 1.0, size=(n, 4)).astype(np.float32)
    deltas[:8, 2:] = rng.choice([-8.0, 8.0], size=(8, 2))  # beyond the log(1000/16) clamp
    gt = random_boxes(rng, n, *IMAGE, max_size=120)
    out["coder/rois"], out["coder/deltas"], out["coder/gt"] = rois, deltas, gt
    stds = [0.1, 0.1, 0.2, 0.2]
    coder = DeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=stds)
    out["coder/decoded"] = coder.decode(t(rois), t(deltas), max_shape=IMAGE).numpy()
    out["coder/decoded_noclip"] = coder.decode(t(rois), t(deltas)).numpy()
    out["coder/encoded"] = coder.encode(t(rois), t(gt)).numpy()
    ga = DeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=[0.07, 0.07, 0.14, 0.14])
    ga_deltas = deltas.copy()
    ga_deltas[:, :2] = 0.0
    out["coder/decoded_ga_anchor"] = ga.decode(t(rois), t(ga_deltas), wh_ratio_clip=1e-6).numpy()
    legacy = LegacyDeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=stds)
    out["coder/legacy_decoded"] = legacy.decode(t(rois), t(deltas), max_shape=IMAGE).numpy()
    out["coder/legacy_decoded_noclip"] = legacy.decode(t(rois), t(deltas)).numpy()
    out["coder/legacy_encoded"] = legacy.encode(t(rois), t(gt)).numpy()


def roi_levels(rng, out):
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    extractor = SingleRoIExtractor(roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0), out_channels=8,
                                   featmap_strides=[4, 8, 16, 32])
    sides = np.concatenate([rng.uniform(1.0, 700.0, size=120), [28, 56, 112, 224, 448, 896, 55.999, 56.001]])
    x1 = rng.uniform(0.0, 50.0, size=sides.size)
    aspect = np.exp(rng.uniform(-1.0, 1.0, size=sides.size))
    aspect[120:] = 1.0
    w, h = sides * aspect ** 0.5, sides / aspect ** 0.5
    boxes = np.stack([x1, x1, x1 + w, x1 + h], axis=1).astype(np.float32)
    rois = torch.cat([torch.zeros(len(boxes), 1), t(boxes)], dim=1)
    out["levels/boxes"] = boxes
    out["levels/mmdet"] = extractor.map_roi_levels(rois, 4).numpy().astype(np.int32)


def paste(rng, out):
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    n = 3
    masks = rng.uniform(0.0, 1.0, size=(n, 28, 28)).astype(np.float32)
    masks[:, 8:20, 8:20] = 0.95  # a confident core, so the thresholded masks are blobs
    boxes = random_boxes(rng, n, *IMAGE, min_size=4.0, max_size=140)
    out["paste/masks"], out["paste/boxes"] = masks, boxes
    for skip in (False, True):
        pasted, where = _do_paste_mask(t(masks)[:, None], t(boxes), *IMAGE, skip_empty=skip)
        full = torch.zeros(n, *IMAGE)
        full[(slice(None),) + where] = pasted
        binary = (full >= 0.5).numpy()
        out[f"paste/binary_skip_empty_{int(skip)}"] = np.packbits(binary.reshape(n, -1), axis=1)
        if not skip:
            common.put(out, "paste/soft", full)


def nms(rng, out):
    """mmdet's two NMS uses: RPN (batched_nms by level, IoU 0.7) and the R-CNN test (multiclass_nms)."""
    from mmcv.ops import batched_nms
    from mmdet.models.layers import multiclass_nms
    n = 200
    boxes = random_boxes(rng, n, *IMAGE, min_size=8.0, max_size=80)
    boxes = np.clip(boxes, 0.0, [IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]]).astype(np.float32)
    scores = rng.uniform(0.0, 1.0, size=n).astype(np.float32)
    levels = rng.integers(0, 5, size=n)
    dets, keep = batched_nms(t(boxes), t(scores), torch.from_numpy(levels), dict(type="nms", iou_threshold=0.7))
    out["nms/boxes"], out["nms/scores"], out["nms/levels"] = boxes, scores, levels.astype(np.int32)
    out["nms/batched_keep"] = keep.numpy().astype(np.int32)
    classes = 4
    class_boxes = np.clip(boxes[:, None, :] + rng.normal(0.0, 3.0, size=(n, classes, 4)), 0.0,
                          [IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]]).astype(np.float32)
    logits = rng.normal(0.0, 2.0, size=(n, classes + 1)).astype(np.float32)
    probs = torch.softmax(t(logits), dim=-1)
    dets, labels = multiclass_nms(t(class_boxes.reshape(n, -1)), probs, 0.05, dict(type="nms", iou_threshold=0.5),
                                  100)
    out["nms/class_boxes"], out["nms/class_scores"] = class_boxes, probs.numpy()
    out["nms/multiclass_dets"], out["nms/multiclass_labels"] = dets.numpy(), labels.numpy().astype(np.int32)


def topk(rng, out):
    """mmdet's dense-head candidate selection (BaseDenseHead, filter_scores_and_topk): per level, the k
    best (anchor, class) pairs whose score > score_thr."""
    from mmdet.models.utils import filter_scores_and_topk
    scores = torch.sigmoid(t(rng.normal(-3.0, 1.5, size=(300, 6))))
    kept, labels, anchors, _ = filter_scores_and_topk(scores, 0.05, 100)
    out["topk/scores"] = scores.numpy()
    out["topk/kept_scores"], out["topk/labels"] = kept.numpy(), labels.numpy().astype(np.int32)
    out["topk/anchors"] = anchors.numpy().astype(np.int32)


def main():
    from tools.zoo_reference.mmdet_ref import OUT, mmdet_modules
    mmdet, mmcv = mmdet_modules()
    rng = np.random.default_rng(OPS_SEED)
    out = {}
    anchors(out)
    coders(rng, out)
    roi_levels(rng, out)
    paste(rng, out)
    nms(rng, out)
    topk(rng, out)
    meta = {"source": "mmdet", "name": "ops", "versions": {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__},
            "seed": OPS_SEED, "image": list(IMAGE), "anchor_image": list(ANCHOR_IMAGE), "script": "tools/zoo_reference/mmdet_ops_ref.py"}
    size = common.write_fixture(OUT / "ops.npz", meta, out)
    print(f"ops.npz: {size / 1024:.1f} KiB, {len(out)} arrays")


if __name__ == "__main__":
    sys.exit(main())
