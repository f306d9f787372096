"""Test-time augmentation: horizontal flip and multiple scales, merged by NMS or Soft-NMS.

Each augmentation resizes the original image keep-ratio to a scale (`tfdet.data.augment`'s rule: the
exact per-axis ratio new/old is recorded), optionally mirrors the resized image, pads it to a multiple
of 32 and runs the model. Its detections are mapped back exactly, in float64 and without rounding (the
HTC report: a flip test that rounds box coordinates *loses* AP):

    unflip (in the resized frame of width Wv):  x -> Wv - x   (x1 and x2 swap; masks mirror;
                                                               keypoints mirror and swap left/right)
    unscale:                                    x -> x / sx,  y -> y / sy

The detections of all augmentations are then merged per class by greedy NMS or Soft-NMS
(`tfdet.ops.nms`). A kept detection's mask is the average of the probability masks of the detections
it absorbed (same class, IoU > iou_threshold, itself included), each resampled into the kept box,
before any thresholding; its keypoints are its own.
"""

import numpy as np
import tensorflow as tf

from tfdet.data import augment
from tfdet.evaluation import results as results_lib
from tfdet.ops import nms

# The HTC / COCO 2018 test scales (short, long) = (600, 900) ... (1400, 2100), as (long, short).
SEED_SCALES = ((900, 600), (1200, 800), (1500, 1000), (1800, 1200), (2100, 1400))
MERGE_METHODS = ("nms", "soft_nms")


def augment_image(image, scale, flip, pad_multiple=32):
    """Model inputs (batch of one) for one augmentation of an [H, W, 3] image: images [1, P, Q, 3]
    float32 and image_info [1, 3, 2] (original size, scale (sy, sx), valid size)."""
    image = tf.convert_to_tensor(image)
    original = tf.cast(tf.shape(image)[:2], tf.float32)
    ex = augment.resize_to_scale({"image": image}, scale)
    if flip:
        ex["image"] = tf.reverse(ex["image"], [1])
    ex = augment.pad_to_multiple(ex, pad_multiple)
    info = tf.stack([original, ex["scale"], tf.cast(ex["valid_size"], tf.float32)])
    return {"images": ex["image"][None], "image_info": info[None]}


def unflip(outputs, valid_width, flip_map=None):
    """Mirrors one image's detections (NumPy dict, network pixels of a flipped image of width
    `valid_width`) back into the unflipped frame."""
    out = dict(outputs)
    x1, y1, x2, y2 = np.moveaxis(np.asarray(outputs["detection_boxes"], np.float64), -1, 0)
    out["detection_boxes"] = np.stack([valid_width - x2, y1, valid_width - x1, y2], axis=-1)
    if "detection_masks" in outputs:
        out["detection_masks"] = np.asarray(outputs["detection_masks"])[..., ::-1]
    if "detection_keypoints" in outputs:
        kps = np.asarray(outputs["detection_keypoints"], np.float64)
        if flip_map is None:
            raise ValueError("flip TTA with keypoints needs flip_map (CocoReader.keypoint_flip_map).")
        kps = kps[..., np.asarray(flip_map), :]
        kps[..., 0] = valid_width - kps[..., 0]
        out["detection_keypoints"] = kps
    return out


def to_original(outputs, image_info):
    """One image's valid detections (NumPy dict, unpadded) with boxes and keypoints in original pixels."""
    out = dict(outputs)
    out["detection_boxes"] = results_lib.boxes_to_original(outputs["detection_boxes"], image_info)
    if "detection_keypoints" in outputs:
        kps = np.array(outputs["detection_keypoints"], np.float64)
        kps[..., :2] = results_lib.to_original(kps[..., :2], image_info)
        out["detection_keypoints"] = kps
    return out


def _resample_mask(mask, src_box, dst_box, size):
    """The [size, size] samples of a mask covering `src_box` at the cell centres of `dst_box`."""
    centres = lambda lo, hi: lo + (np.arange(size) + 0.5) * (hi - lo) / size  # noqa: E731
    return results_lib.sample_mask(mask, src_box, centres(dst_box[1], dst_box[3]), centres(dst_box[0], dst_box[2]))


def merge(candidates, max_detections=100, method="nms", iou_threshold=0.5, sigma=0.5, min_score=1e-3):
    """Merges one image's detections from several augmentations (all in the same frame).

    Args:
      candidates: list of unpadded NumPy dicts (detection_boxes [n, 4], detection_scores [n],
        detection_classes [n], optional detection_masks [n, M, M], detection_keypoints [n, K, 3]).
      method: "nms" (greedy, class-wise) or "soft_nms" (linear Soft-NMS, class-wise; `iou_threshold` is
        its Nt). Both via tfdet.ops.nms.
    Returns:
      padded outputs dict of a batch of one (num_detections [1], detection_* [1, max_detections, ...]).
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {MERGE_METHODS}, got {method!r}.")
    cat = {k: np.concatenate([np.asarray(c[k]) for c in candidates]) for k in candidates[0]}
    boxes = cat["detection_boxes"].astype(np.float64)
    scores = cat["detection_scores"].astype(np.float32)
    classes = cat["detection_classes"].astype(np.int32)
    d = max_detections
    if len(scores):
        if method == "nms":
            kept = nms.batched_nms(boxes[None], scores[None], d, iou_threshold, groups=classes[None])
        else:  # classes never meet: each one is shifted to its own region of the plane
            shifted = boxes + (classes[:, None] * (boxes.max() - boxes.min() + 1.0))
            kept = nms.soft_nms(shifted[None], scores[None], d, "linear", iou_threshold, sigma, min_score)
        keep = kept.indices.numpy()[0]
        keep_scores = kept.scores.numpy()[0][keep >= 0]
        keep = keep[keep >= 0]
    else:
        keep, keep_scores = np.zeros([0], np.int64), np.zeros([0], np.float32)
    n = len(keep)
    out = {"num_detections": np.array([n], np.int32),
           "detection_boxes": np.zeros([1, d, 4], np.float64), "detection_scores": np.zeros([1, d], np.float32),
           "detection_classes": np.full([1, d], -1, np.int32)}
    out["detection_boxes"][0, :n] = boxes[keep]
    out["detection_scores"][0, :n] = keep_scores
    out["detection_classes"][0, :n] = classes[keep]
    if "detection_keypoints" in cat:
        kps = cat["detection_keypoints"]
        out["detection_keypoints"] = np.zeros((1, d) + kps.shape[1:], np.float64)
        out["detection_keypoints"][0, :n] = kps[keep]
    if "detection_masks" in cat:
        masks = cat["detection_masks"]
        size = masks.shape[-1]
        out["detection_masks"] = np.zeros([1, d, size, size], np.float32)
        if n:
            iou = _iou(boxes[keep], boxes)  # [n, all]
            for i, k in enumerate(keep):
                absorbed = (iou[i] > iou_threshold) & (classes == classes[k])
                members = np.flatnonzero(absorbed | (np.arange(len(boxes)) == k))
                out["detection_masks"][0, i] = np.mean(
                    [_resample_mask(masks[j], boxes[j], boxes[k], size) for j in members], axis=0)
    return out


def _iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def _unpad(outputs):
    out = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in outputs.items()}
    n = int(out["num_detections"][0])
    return {k: v[0, :n] for k, v in out.items() if k != "num_detections"}


def tta_predict(model_fn, image, scales=SEED_SCALES, flip=True, merge_method="nms", iou_threshold=0.5,
                max_detections=100, flip_map=None, sigma=0.5, min_score=1e-3, pad_multiple=32, image_id=None):
    """Runs `model_fn` (the PredictFn protocol, `tfdet.evaluation.evaluator`) on every (scale, flip)
    augmentation of one [H, W, 3] image and merges the detections in the original frame.

    Returns (outputs, image_info): padded outputs of a batch of one with boxes / keypoints in original
    pixels, and the matching identity image_info [1, 3, 2] (for `results.detections_to_coco`).
    `image_id`, when given, is passed to the model as image_id [1] like the pipeline does."""
    if not scales:
        raise ValueError("tta_predict needs at least one scale.")
    candidates = []
    for scale in scales:
        for flipped in ((False, True) if flip else (False,)):
            inputs = augment_image(image, scale, flipped, pad_multiple)
            if image_id is not None:
                inputs["image_id"] = tf.constant([image_id], tf.int64)
            info = inputs["image_info"].numpy()[0].astype(np.float64)
            dets = _unpad(results_lib.check_outputs(model_fn(inputs)))
            if flipped:
                dets = unflip(dets, info[2, 1], flip_map)
            candidates.append(to_original(dets, info))
    out = merge(candidates, max_detections, merge_method, iou_threshold, sigma, min_score)
    h, w = (float(v) for v in np.shape(image)[:2])
    return out, np.array([[[h, w], [1.0, 1.0], [h, w]]], np.float64)
