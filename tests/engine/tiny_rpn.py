"""A tiny detector-like keras.Model for the engine tests: a 4-conv backbone (no normalization, so
replicas and single devices compute the same thing) + tfdet's RPNHead on two levels (strides 8, 16),
trained with tfdet's RPN losses. It follows the engine's detector protocol: `TinyRPN(model_config)`,
weights created by `build()`, `compute_losses(batch, training)` -> {name: scalar}.

Every anchor that the matcher labels is sampled (num_samples >= anchors), so the losses are
deterministic, and each is the mean over images of per-image losses: the mean over a global batch
equals the mean of the replicas' means, which makes 1-device vs N-replica runs exactly comparable.
`num_samples` > 0 samples that many anchors per image instead (half positive at most), drawn at random
as the real detectors do (for the exact-resume tests).
`inject_nan_at_step` makes the loss NaN from that optimizer step on (for the NaN tests): the model counts
its training steps in a weight of its own (restored with the checkpoint).
"""

import keras
import ml_collections
import tensorflow as tf

from tfdet.modeling.dense_heads.rpn import RPNHead, flatten_levels, rpn_losses
from tfdet.ops.anchors import AnchorGenerator

STRIDES = (8, 16)


class TinyRPN(keras.Model):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
        self.model_config = config
        width = int(config.get("width", 8))
        self.convs = [keras.layers.Conv2D(width * min(2 ** i, 2), 3, strides=2, padding="same", activation="relu",
                                          name=f"conv{i}") for i in range(4)]
        self.head = RPNHead(num_anchors=3, feat_channels=width * 2, name="rpn_head")
        self.anchor_generator = AnchorGenerator(STRIDES, ratios=(0.5, 1.0, 2.0), scales=(4.0,))
        self.inject_nan_at_step = int(config.get("inject_nan_at_step", -1))
        self.steps = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False, name="steps")
        self.num_samples = int(config.get("num_samples", 0))

    def features(self, images):
        x = images / 255.0 - 0.5
        levels = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i >= 2:
                levels.append(x)
        return levels

    def call(self, images, training=False):
        if isinstance(images, dict):
            images = images["images"]
        return self.head(self.features(tf.cast(images, self.compute_dtype)))

    def build(self, input_shape=None):
        if not self.built:
            self.head(self.features(tf.zeros([1, 64, 64, 3])))
            self.built = True

    def compute_losses(self, batch, training=False):
        objectness, deltas = self(batch["images"], training=training)
        sizes = [o.shape[1:3] for o in objectness]
        anchors = self.anchor_generator(sizes)
        anchors = tf.concat(anchors, 0) if isinstance(anchors, (list, tuple)) else anchors
        objectness = flatten_levels(objectness, 1)[..., 0]
        deltas = flatten_levels(deltas, 4)
        num_samples, positive_fraction = (self.num_samples, 0.5) if self.num_samples else (objectness.shape[1], 1.0)
        per_image = [rpn_losses(objectness[i:i + 1], deltas[i:i + 1], anchors, batch["gt_boxes"][i:i + 1],
                                batch["gt_classes"][i:i + 1], gt_is_crowd=batch["gt_is_crowd"][i:i + 1],
                                num_samples=num_samples, positive_fraction=positive_fraction)
                     for i in range(int(batch["images"].shape[0]))]
        losses = {k: tf.add_n([p[k] for p in per_image]) / len(per_image) for k in per_image[0]}
        if self.inject_nan_at_step >= 0 and training:
            bad = self.steps >= self.inject_nan_at_step
            losses["rpn_cls"] = losses["rpn_cls"] * tf.where(bad, float("nan"), 1.0)
            self.steps.assign_add(1)
        return losses

    def get_config(self):
        return {"config": self.model_config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.pop("config"), **config)
