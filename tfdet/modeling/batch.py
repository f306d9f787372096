"""What goes into a detector and what comes out: the batch dict, the outputs dict, and the helpers that
read or write them.

Batches are dicts with the keys of tfdet.data.pipeline:
  images       [B, H, W, 3] float32 RGB, 0..255 (normalized inside the model with pixel_mean / pixel_std)
  image_info   [B, 3, 2] rows original (h, w), scale (sy, sx), valid (h, w) of the image inside the
               padding (boxes are clipped to the valid size, anchors outside it are ignored); a [B, 2]
               (h, w) tensor is accepted too; optional (then the whole padded image is valid)
  gt_boxes     [B, M, 4] float32 (x1, y1, x2, y2) pixels;  gt_classes [B, M] int32, -1 = padding
  gt_is_crowd  [B, M] bool (optional)
  gt_masks     [B, M, S, S] uint8 masks cropped to their gt box (pipeline default), or [B, M, H, W]
               full-image bitmaps with model.mask.gt_masks = "image" (Mask R-CNN)
  gt_keypoints [B, M, K, 3] float32 (x, y, visibility) (Keypoint R-CNN)
  semantic     [B, H', W'] int semantic labels, 255 = ignore (HTC's semantic branch)
Outputs of `call` / `detect` (padded to max_detections):
  num_detections [B] int32, detection_boxes [B, D, 4], detection_scores [B, D],
  detection_classes [B, D] int32 (-1 padding) and, with a mask branch, detection_masks [B, D, 28, 28]
  (box-relative probabilities; paste with tfdet.modeling.roi_heads.paste_masks), with a keypoint
  branch detection_keypoints [B, D, K, 3] (x, y, score).
"""

import tensorflow as tf


def image_sizes_of(batch):
    """[B, 2] float32 (height, width) of the image content: image_info[:, 2] ([B, 3, 2]) or image_info
    ([B, 2]); without image_info the padded batch's size."""
    images = batch["images"]
    if "image_info" in batch:
        info = tf.cast(batch["image_info"], tf.float32)
        if info.shape.rank == 3 and info.shape[1:] == (3, 2):
            return info[:, 2, :]
        if info.shape.rank == 2 and info.shape[-1] == 2:
            return info
        raise ValueError(f"image_info must be [B, 3, 2] (original, scale, valid size) or [B, 2] (valid height, "
                         f"width), got shape {info.shape}.")
    shape = tf.shape(images)
    return tf.cast(tf.tile(shape[None, 1:3], [shape[0], 1]), tf.float32)


def detection_outputs(dets):
    """The padded outputs dict (num_detections, detection_boxes / scores / classes) of nms.Detections."""
    return {"num_detections": dets.num_valid, "detection_boxes": dets.boxes, "detection_scores": dets.scores,
            "detection_classes": dets.classes}


def proposal_outputs(proposals):
    """The padded outputs dict of Proposals: every valid proposal is class 0 with its objectness score;
    padding rows have class -1, zero boxes and scores (valid rows come first)."""
    return {"num_detections": tf.reduce_sum(tf.cast(proposals.valid, tf.int32), axis=1),
            "detection_boxes": proposals.boxes, "detection_scores": proposals.scores,
            "detection_classes": tf.where(proposals.valid, 0, -1)}
