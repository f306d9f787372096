"""Padded detector outputs -> COCO results (NumPy, host side): the one converter, used by evaluation
(`detections_to_coco`) and by the serving clients (`serving_to_coco`).

Detector outputs (the detectors' documented contract, padded to D detections per image):
  num_detections      [B] int                number of valid rows (valid rows come first)
  detection_boxes     [B, D, 4] float        (x1, y1, x2, y2) in network-input pixels
  detection_scores    [B, D] float
  detection_classes   [B, D] int             contiguous class in [0, C), -1 = padding
  detection_masks     [B, D, M, M] float     optional: probabilities of the mask covering its box exactly,
                      or [B, D, H, W] uint8  0/1 full-image masks (serving's mask_output="image")
  detection_keypoints [B, D, K, 3] float     optional: (x, y, score) in network-input pixels
  image_status        [B] int                optional (serving): non-zero = the image was not run
The serving signatures (tfdet.serving.module) give the same outputs in original-image pixels with
dataset category ids: `serving_to_coco` reads them with an identity image_info.

`image_info` is the pipeline's [B, 3, 2]: original (h, w), scale (sy, sx) original -> network input,
valid (h, w). Boxes go back to the original image by dividing by the scale, in float64, with no rounding
(the HTC report's lesson: rounding box coordinates costs AP), and are clipped to the original image.
Keypoints also lose the 0.5 the COCO reader adds (COCO stores integer pixel indices). Masks are pasted
into the original image (`paste_mask`), thresholded and RLE-encoded with pycocotools.
"""

import numpy as np
from pycocotools import mask as mask_utils

REQUIRED_KEYS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def _numpy(outputs):
    return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in outputs.items()}


def check_outputs(outputs):
    """Raises ValueError naming what is wrong with a padded outputs dict; returns it as NumPy arrays."""
    missing = [k for k in REQUIRED_KEYS if k not in outputs]
    if missing:
        raise ValueError(f"detector outputs lack {missing}; got keys {sorted(outputs)}.")
    out = _numpy(outputs)
    b, d = out["detection_scores"].shape[:2] if out["detection_scores"].ndim == 2 else (None, None)
    if b is None or out["detection_boxes"].shape != (b, d, 4):
        raise ValueError(f"detection_boxes must be [B, D, 4] and detection_scores [B, D], got "
                         f"{out['detection_boxes'].shape} and {out['detection_scores'].shape}.")
    if out["detection_classes"].shape != (b, d) or out["num_detections"].shape != (b,):
        raise ValueError(f"detection_classes must be [B, D] and num_detections [B], got "
                         f"{out['detection_classes'].shape} and {out['num_detections'].shape}.")
    return out


def to_original(points_xy, image_info):
    """[..., 2k] x/y-interleaved network-input coordinates -> original image coordinates (float64):
    x / sx, y / sy. `image_info` [3, 2] of one image."""
    sy, sx = np.asarray(image_info, np.float64)[1]
    scale = np.tile([sx, sy], np.shape(points_xy)[-1] // 2)
    return np.asarray(points_xy, np.float64) / scale


def boxes_to_original(boxes, image_info):
    """[N, 4] network-input boxes -> original-image boxes (float64, unrounded, clipped to the image)."""
    h, w = np.asarray(image_info, np.float64)[0]
    return np.clip(to_original(boxes, image_info), 0.0, [w, h, w, h])


def axis_taps(lo, hi, coords, size):
    """Bilinear taps sampling a `size`-cell axis that spans [lo, hi] at `coords`: (i0, w0, i1, w1), each
    [len(coords)], indices into the axis zero-padded by one cell on each side (index 0 and size + 1 are
    zeros), so a sample is w0 * padded[i0] + w1 * padded[i1].

    Cell c covers [lo + c * step, lo + (c + 1) * step] (step = (hi - lo) / size), its value sits at its
    centre; sampling outside the centres interpolates towards zero (zero padding, like grid_sample with
    align_corners=False), so values fade to zero over the half cell at the border. Used to paste masks
    into images and to resample masks between boxes (one convention, detectron2's)."""
    coords = np.asarray(coords, np.float64)
    step = max(float(hi) - float(lo), 1e-6) / size
    u = (coords - lo) / step - 0.5  # continuous cell index
    u0 = np.floor(u)
    frac = u - u0
    # Beyond the padding both taps read a zero cell.
    i0 = np.clip(u0, -1, size).astype(np.int64) + 1
    i1 = np.clip(u0 + 1, -1, size).astype(np.int64) + 1
    return i0, 1.0 - frac, i1, frac


def sample_mask(mask, box, ys, xs):
    """[len(ys), len(xs)] bilinear samples (zero padded, `axis_taps`) of a box-relative [M, M] mask that
    covers `box` (x1, y1, x2, y2), at the image points ys x xs. Separable: two gathers per axis."""
    mask = np.asarray(mask, np.float64)
    x1, y1, x2, y2 = (float(v) for v in box)
    padded = np.pad(mask, 1)
    ty0, wy0, ty1, wy1 = axis_taps(y1, y2, ys, mask.shape[0])
    tx0, wx0, tx1, wx1 = axis_taps(x1, x2, xs, mask.shape[1])
    rows = wy0[:, None] * padded[ty0] + wy1[:, None] * padded[ty1]  # [len(ys), M + 2]
    return rows[:, tx0] * wx0 + rows[:, tx1] * wx1


def paste_region(mask, box, height, width):
    """(r0, r1, c0, c1, probabilities [r1 - r0, c1 - c0]): the part of the image a box-relative mask
    reaches (its box plus the half-cell fade, clipped to the image) and the mask sampled at those
    pixels' centres."""
    m_h, m_w = np.shape(mask)
    x1, y1, x2, y2 = (float(v) for v in box)
    hx, hy = 0.5 * (x2 - x1) / m_w, 0.5 * (y2 - y1) / m_h  # the fade reaches half a cell out
    c0, c1 = int(np.clip(np.floor(x1 - hx), 0, width)), int(np.clip(np.ceil(x2 + hx), 0, width))
    r0, r1 = int(np.clip(np.floor(y1 - hy), 0, height)), int(np.clip(np.ceil(y2 + hy), 0, height))
    if c1 <= c0 or r1 <= r0:
        return r0, r0, c0, c0, np.zeros((0, 0))
    return r0, r1, c0, c1, sample_mask(mask, box, np.arange(r0, r1) + 0.5, np.arange(c0, c1) + 0.5)


def paste_mask(mask, box, height, width, threshold=0.5):
    """Pastes one box-relative [M, M] probability mask into a height x width image.

    Pixel (i, j) (centre (j + 0.5, i + 0.5)) takes the bilinear sample of the mask there (see
    `axis_taps`). Returns uint8 0/1 (probabilities >= threshold), or float64 probabilities when
    threshold is None. Only the pixels within half a mask cell of the box are computed (the rest are 0)."""
    r0, r1, c0, c1, values = paste_region(mask, box, height, width)
    out = np.zeros((height, width), np.float64 if threshold is None else np.uint8)
    out[r0:r1, c0:c1] = values if threshold is None else values >= threshold
    return out


def encode_masks(masks, boxes, height, width, threshold=0.5):
    """Compressed COCO RLEs (json-ready str counts) of box-relative masks [N, M, M] pasted into a
    height x width image: one pycocotools call over an [H, W, N] Fortran-ordered stack."""
    stack = np.zeros((height, width, len(masks)), np.uint8, order="F")
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        r0, r1, c0, c1, values = paste_region(mask, box, height, width)
        stack[r0:r1, c0:c1, i] = values >= threshold
    return _encode(stack)


def _encode(stack):
    """json-ready compressed RLEs of a Fortran-ordered [H, W, N] uint8 stack."""
    rles = mask_utils.encode(stack) if stack.shape[-1] else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def identity_info(image_sizes):
    """[B, 3, 2] image_info of outputs already in original pixels: original = valid = (h, w), scale 1."""
    sizes = np.asarray(image_sizes, np.float64).reshape(-1, 2)
    return np.stack([sizes, np.ones_like(sizes), sizes], axis=1)


def _full_image_rles(bitmaps, height, width):
    """Compressed RLEs of [N, H', W'] 0/1 full-image masks, each cropped to its image's height x width."""
    return _encode(np.asfortranarray(np.asarray(bitmaps)[:, :height, :width].transpose(1, 2, 0).astype(np.uint8)))


def detections_to_coco(outputs, image_info, image_ids, class_to_category, mask_threshold=0.5,
                       score_threshold=0.0):
    """COCO results (a list of dicts) of one batch of padded detector outputs.

    Args:
      outputs: the detector's padded outputs dict (tensors or arrays), see the module docstring.
      image_info: [B, 3, 2] the pipeline's image_info. image_ids: [B] COCO image ids.
      class_to_category: contiguous class -> COCO category id (`CocoReader.class_to_category`); None when
        the classes already are category ids.
      mask_threshold: pasted mask probabilities >= this are foreground.
      score_threshold: detections scoring below it are left out.
    Returns:
      one dict per detection: image_id, category_id, bbox (x, y, w, h floats in the original image),
      score, and segmentation (RLE) / keypoints (flat x, y, score, COCO pixel-index convention) when the
      outputs have masks / keypoints.
    """
    out = check_outputs(outputs)
    image_info = np.asarray(image_info, np.float64)
    image_ids = np.asarray(image_ids).reshape(-1)
    batch = out["detection_scores"].shape[0]
    if image_info.shape != (batch, 3, 2) or image_ids.shape != (batch,):
        raise ValueError(f"image_info must be [B, 3, 2] and image_ids [B] with B = {batch}, got "
                         f"{image_info.shape} and {image_ids.shape}.")
    masks = out.get("detection_masks")
    results = []
    for b in range(batch):
        if "image_status" in out and out["image_status"][b] != 0:
            continue
        n = int(out["num_detections"][b])
        info = image_info[b]
        height, width = (int(round(v)) for v in info[0])
        boxes = boxes_to_original(out["detection_boxes"][b, :n], info)
        keep = [d for d in range(n) if out["detection_classes"][b, d] >= 0
                and out["detection_scores"][b, d] >= score_threshold]
        if class_to_category is not None:
            unknown = sorted({int(out["detection_classes"][b, d]) for d in keep} - set(class_to_category))
            if unknown:
                raise ValueError(f"detection class {unknown[0]} is not among the {len(class_to_category)} classes "
                                 f"of the annotations.")
        if masks is not None and masks.dtype.kind == "f":
            rles = dict(zip(keep, encode_masks(masks[b, keep], boxes[keep], height, width, mask_threshold)))
        elif masks is not None:
            rles = dict(zip(keep, _full_image_rles(masks[b, keep], height, width)))
        for d in keep:
            cls = int(out["detection_classes"][b, d])
            x1, y1, x2, y2 = (float(v) for v in boxes[d])
            category = cls if class_to_category is None else int(class_to_category[cls])
            res = {"image_id": int(image_ids[b]), "category_id": category,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(out["detection_scores"][b, d])}
            if masks is not None:
                res["segmentation"] = rles[d]
            if "detection_keypoints" in out:
                kps = out["detection_keypoints"][b, d].astype(np.float64)
                xy = to_original(kps[:, :2].reshape(-1), info).reshape(-1, 2) - 0.5
                res["keypoints"] = np.concatenate([xy, kps[:, 2:3]], axis=1).reshape(-1).tolist()
            results.append(res)
    return results


def proposals_to_coco(boxes, scores, num_valid, image_info, image_ids, category_id=1):
    """COCO results of padded proposals ([B, N, 4] network-input boxes, [B, N] scores, [B] valid counts)
    for class-agnostic recall: every proposal gets `category_id` (ignored by useCats=0)."""
    outputs = {"num_detections": num_valid, "detection_boxes": boxes, "detection_scores": scores,
               "detection_classes": np.zeros(np.shape(scores), np.int32)}
    return detections_to_coco(outputs, image_info, image_ids, {0: category_id})


def serving_to_coco(outputs, image_ids, score_threshold=0.0, mask_threshold=0.5):
    """COCO results of one batch of a serving signature's outputs (tfdet.serving.module: boxes and
    keypoints in original pixels, classes already category ids, `image_size` [B, 2]); images whose
    `image_status` is non-zero have none."""
    return detections_to_coco(outputs, identity_info(outputs["image_size"]), image_ids, None, mask_threshold,
                              score_threshold)
