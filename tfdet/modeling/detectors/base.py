"""Shared base of the detectors: a keras.Model built from a model config, no loss math.

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
Outputs of `call` / `predict_step` (padded to max_detections):
  num_detections [B] int32, detection_boxes [B, D, 4], detection_scores [B, D],
  detection_classes [B, D] int32 (-1 padding) and, per family, detection_masks [B, D, 28, 28]
  (box-relative probabilities; paste with tfdet.modeling.roi_heads.paste_masks) and
  detection_keypoints [B, D, K, 3] (x, y, score).
Subclasses implement `compute_losses(batch, training)` -> {name: scalar} and
`detect(images, image_sizes)` -> outputs dict.
"""

import keras
import ml_collections
import tensorflow as tf

from tfdet.engine import step as engine_step
from tfdet.modeling.backbones import build_backbone
from tfdet.modeling.necks.fpn import FPN

_DEFAULT_MEAN = (123.675, 116.28, 103.53)
_DEFAULT_STD = (58.395, 57.12, 57.375)


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


class Detector(keras.Model):
    """Backbone + FPN + whatever a subclass adds. `config` is the model ConfigDict (or a plain dict)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
        self.model_config = config
        self.num_classes = int(config.num_classes)
        impl = config.get("ops_impl")  # every custom op of the model: None (fused when loaded) | fused | composite
        backbone = config.backbone.to_dict()
        if backbone.get("dcn"):
            backbone["dcn"] = {**backbone["dcn"], "impl": impl}
        self.backbone = build_backbone(backbone)
        self.neck = FPN(**config.neck.to_dict(), impl=impl)
        self.pixel_mean = tf.constant(config.get("pixel_mean", _DEFAULT_MEAN), tf.float32)
        self.pixel_std = tf.constant(config.get("pixel_std", _DEFAULT_STD), tf.float32)

    def features(self, images, training=False):
        """{level: [B, H_l, W_l, C]} FPN features of raw 0..255 images."""
        images = (tf.cast(images, tf.float32) - self.pixel_mean) / self.pixel_std
        return {int(k): v for k, v in self.neck(self.backbone(images, training=training)).items()}

    def build(self, input_shape=None):
        """Creates every weight by running the inference path once on a small zero image."""
        if self.built:
            return
        self.detect(tf.zeros([1, 64, 64, 3]), tf.constant([[64.0, 64.0]]))
        self.built = True

    def call(self, inputs, training=False):
        batch = inputs if isinstance(inputs, dict) else {"images": inputs}
        return self.detect(batch["images"], image_sizes_of(batch))

    def train_step(self, data):
        # The engine's step: correct under tf.distribute (each replica's loss scaled by 1/replicas,
        # gradients summed), also when a user calls model.fit() directly.
        return engine_step.train_step(self, data)

    def test_step(self, data):
        return engine_step.test_step(self, data)

    def predict_step(self, data):
        return self(data, training=False)

    def get_config(self):
        return {"config": self.model_config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.pop("config"), **config)
