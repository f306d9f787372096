"""Keypoint R-CNN head (detectron2 KRCNNConvDeconvUpsampleHead), targets, loss and inference.

Head: 8 x (3x3 conv 512 + ReLU) on 14x14 RoIAlign features, a 4x4 stride-2 deconv to one map per
keypoint (28x28), then 2x bilinear upsampling (half-pixel centres) to 56x56 heatmap logits.

Targets (detectron2 keypoints_to_heatmap): a visible keypoint (v > 0) at (x, y) of a RoI
(x1, y1, x2, y2) falls in heatmap cell floor((x - x1) * S / (x2 - x1)) (x == x2 goes to the last
cell), likewise y; keypoints outside the RoI are not trained. Loss: softmax cross-entropy over the
S * S cells of each trained keypoint, summed and divided by the number of trained keypoints.

Inference: the arg-max cell (ix, iy) of each heatmap maps to the cell centre
x = x1 + (ix + 0.5) * (x2 - x1) / S (likewise y); its score is the heatmap logit there. (detectron2
first resizes each heatmap bicubically to the box size; the cell-centre arg-max here is within
half a cell of it.)
"""

import keras
import numpy as np
import tensorflow as tf

from tfdet import losses
from tfdet.modeling.conv_norm import build_conv_stack, conv_stack, run_conv_stack
from tfdet.ops import postprocess

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle")
# Horizontal flip: keypoint k of the flipped image is keypoint COCO_KEYPOINT_FLIP_MAP[k] of the original.
COCO_KEYPOINT_FLIP_MAP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15], np.int32)


@keras.saving.register_keras_serializable(package="tfdet")
class KeypointHead(keras.layers.Layer):
    """Call on RoI features [B, K, S, S, C]; returns heatmap logits [B, K, 4S, 4S, num_keypoints]."""

    def __init__(self, num_keypoints=17, num_convs=8, channels=512, **kwargs):
        super().__init__(**kwargs)
        self.num_keypoints, self.num_convs, self.channels = int(num_keypoints), int(num_convs), int(channels)
        init = keras.initializers.HeNormal()
        self.convs, self.norms = conv_stack(self.num_convs, self.channels)
        self.deconv = keras.layers.Conv2DTranspose(self.num_keypoints, 4, strides=2, padding="same", name="deconv",
                                                   kernel_initializer=init)

    def build(self, input_shape):
        self.deconv.build(build_conv_stack(self.convs, self.norms, (None, *input_shape[2:])))
        super().build(input_shape)

    def call(self, roi_features):
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [shape[0] * shape[1], *roi_features.shape[2:]])
        x = self.deconv(run_conv_stack(x, self.convs, self.norms))
        size = x.shape[1] * 2, x.shape[2] * 2
        x = tf.image.resize(x, size, method="bilinear")  # half-pixel centres: align_corners=False
        return tf.reshape(x, [shape[0], shape[1], *size, self.num_keypoints])

    def get_config(self):
        config = super().get_config()
        config.update(num_keypoints=self.num_keypoints, num_convs=self.num_convs, channels=self.channels)
        return config


def keypoint_targets(gt_keypoints, rois, matched_gt, heatmap_size=56):
    """Heatmap cell index targets.

    Args:
      gt_keypoints: [B, G, K, 3] (x, y, visibility) in image pixels. rois: [B, R, 4];
      matched_gt: [B, R] gt index of positive RoIs (-1 otherwise).
    Returns:
      [B, R, K] int32 cell index y * S + x, -1 where not trained.
    """
    gt_keypoints = tf.cast(gt_keypoints, tf.float32)
    points = tf.gather(gt_keypoints, tf.maximum(tf.cast(matched_gt, tf.int32), 0), batch_dims=1)  # [B, R, K, 3]
    rois = tf.cast(rois, tf.float32)[:, :, None, :]
    size = float(heatmap_size)

    def cell(coord, low, high):
        scale = size / tf.maximum(high - low, 1e-6)
        index = tf.floor((coord - low) * scale)
        return tf.where(tf.equal(coord, high), size - 1.0, index)

    x = cell(points[..., 0], rois[..., 0], rois[..., 2])
    y = cell(points[..., 1], rois[..., 1], rois[..., 3])
    valid = ((points[..., 2] > 0) & (x >= 0) & (y >= 0) & (x < size) & (y < size)
             & (matched_gt >= 0)[..., None])
    index = tf.cast(y, tf.int32) * heatmap_size + tf.cast(x, tf.int32)
    return tf.stop_gradient(tf.where(valid, index, -1))


def keypoint_loss(heatmaps, targets):
    """Softmax CE over heatmap cells; heatmaps [B, R, S, S, K], targets [B, R, K] (-1 ignored).
    Mean over trained keypoints (0 when there is none)."""
    shape = tf.shape(heatmaps)
    logits = tf.reshape(tf.transpose(heatmaps, [0, 1, 4, 2, 3]), [shape[0], shape[1], shape[4], -1])
    return losses.cross_entropy(logits, targets)


DECODE_RULES = ("cell_center", "torchvision")


def decode_keypoints(heatmaps, boxes, rule="cell_center"):
    """heatmaps_to_keypoints ("cell_center") or torchvision's bicubic rule
    (tfdet.ops.postprocess.heatmaps_to_keypoints_torchvision): [B, R, K, 3] (x, y, score)."""
    if rule not in DECODE_RULES:
        raise ValueError(f"keypoint decoding must be one of {DECODE_RULES} (model.keypoint.decode), got {rule!r}.")
    if rule == "torchvision":
        return postprocess.heatmaps_to_keypoints_torchvision(heatmaps, boxes)
    return heatmaps_to_keypoints(heatmaps, boxes)


def heatmaps_to_keypoints(heatmaps, boxes):
    """[B, R, S, S, K] heatmap logits and [B, R, 4] boxes -> [B, R, K, 3] (x, y, score) in image pixels."""
    heatmaps = tf.cast(heatmaps, tf.float32)
    shape = tf.shape(heatmaps)
    size = heatmaps.shape[2]
    flat = tf.reshape(tf.transpose(heatmaps, [0, 1, 4, 2, 3]), [shape[0], shape[1], shape[4], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(flat, axis=-1)
    iy, ix = tf.cast(best // size, tf.float32), tf.cast(best % size, tf.float32)
    boxes = tf.cast(boxes, tf.float32)[:, :, None, :]
    x = boxes[..., 0] + (ix + 0.5) * (boxes[..., 2] - boxes[..., 0]) / size
    y = boxes[..., 1] + (iy + 0.5) * (boxes[..., 3] - boxes[..., 1]) / size
    return tf.stack([x, y, score], axis=-1)
