"""Detections derived from ground truth, as a detector would output them (padded, network pixels)."""

import numpy as np


def box_relative_masks(full_masks, boxes, size):
    """[N, size, size] float: each full-image mask sampled (nearest) at the cell centres of its box."""
    out = np.zeros((len(boxes), size, size), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        xs = np.floor(x1 + (np.arange(size) + 0.5) * (x2 - x1) / size).astype(int)
        ys = np.floor(y1 + (np.arange(size) + 0.5) * (y2 - y1) / size).astype(int)
        h, w = full_masks[i].shape
        out[i] = full_masks[i][np.clip(ys, 0, h - 1)][:, np.clip(xs, 0, w - 1)]
    return out


def gt_outputs(reader, records, scales, max_detections=8, jitter=0.0, mask_size=0, keypoints=False, seed=0,
               drop=0):
    """Padded outputs for `records` whose detections are the ground truth (optionally jittered by up
    to `jitter` pixels, and with the last `drop` instances of each image missing), scaled by
    `scales` [B, 2] (sy, sx) into the network input. Returns (outputs, image_info, image_ids)."""
    rng = np.random.default_rng(seed)
    b, d = len(records), max_detections
    outputs = {"num_detections": np.zeros([b], np.int32), "detection_boxes": np.zeros([b, d, 4], np.float32),
               "detection_scores": np.zeros([b, d], np.float32), "detection_classes": -np.ones([b, d], np.int32)}
    if mask_size:
        outputs["detection_masks"] = np.zeros([b, d, mask_size, mask_size], np.float32)
    if keypoints:
        outputs["detection_keypoints"] = np.zeros([b, d, reader.num_keypoints, 3], np.float32)
    info = np.zeros([b, 3, 2], np.float32)
    for i, rec in enumerate(records):
        sy, sx = scales[i]
        info[i] = [[rec.height, rec.width], [sy, sx], [round(rec.height * sy), round(rec.width * sx)]]
        n = min(rec.num_instances - drop, d)
        boxes = rec.boxes[:n].astype(np.float64)
        boxes = boxes + rng.uniform(-jitter, jitter, boxes.shape)
        boxes = np.clip(boxes, 0, [rec.width, rec.height] * 2)
        outputs["num_detections"][i] = n
        outputs["detection_boxes"][i, :n] = boxes * [sx, sy, sx, sy]
        outputs["detection_scores"][i, :n] = rng.uniform(0.3, 1.0, n)
        outputs["detection_classes"][i, :n] = rec.classes[:n]
        if mask_size:
            outputs["detection_masks"][i, :n] = box_relative_masks(reader.load_masks(rec)[:n], boxes, mask_size)
        if keypoints:
            kps = rec.keypoints[:n].copy()
            kps[..., 0] *= sx
            kps[..., 1] *= sy
            kps[..., 2] = 1.0
            outputs["detection_keypoints"][i, :n] = kps
    return outputs, info, np.array([r.image_id for r in records], np.int64)
