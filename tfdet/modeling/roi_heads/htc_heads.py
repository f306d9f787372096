"""Hybrid Task Cascade heads (Chen et al. 2019; mmdetection HTCMaskHead, FusedSemanticHead).

HTCMaskHead: the FCN mask head (MaskHead) that also returns its last conv features and, from the
second stage on, adds the previous stage's mask features through a 1x1 conv to its input (mask
information flow; `flow_activation="relu"`: the conv is followed by a ReLU, mmdetection's conv_res).
SemanticHead: every FPN level through a 1x1 conv + ReLU and resized (bilinear) to the fusion level
(stride 8), summed, 4 x (3x3 conv + ReLU), a 1x1 embedding conv (the features RoI-pooled into box and
mask RoI features) and a 1x1 classifier; loss: cross-entropy at stride 8 (labels nearest-downsampled),
ignore label 255, weight 0.2. `fusion` orders the lateral conv and the resize: "conv_then_resize"
(half-pixel bilinear of each level's lateral output) or "resize_then_conv" (mmdetection
FusedSemanticHead: each level bilinearly resized with align_corners=True, then its lateral conv).
"""

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.modeling.conv_norm import run_conv_stack
from tfdet.modeling.roi_heads.mask_head import MaskHead

IGNORE_LABEL = 255
FLOW_ACTIVATIONS = (None, "relu")
FUSIONS = ("conv_then_resize", "resize_then_conv")


@keras.saving.register_keras_serializable(package="tfdet")
class HTCMaskHead(MaskHead):
    """call(roi_features [B, K, S, S, C], previous [B, K, S, S, channels] or None)
    -> (logits [B, K, 2S, 2S, num_classes], features [B, K, S, S, channels]).
    `with_flow`: this stage receives the previous stage's features (1x1 conv, then `flow_activation`:
    None or "relu", added to the input)."""

    def __init__(self, num_classes, num_convs=4, channels=256, upsample="deconv", class_agnostic=False,
                 with_flow=False, flow_activation=None, **kwargs):
        super().__init__(num_classes, num_convs, channels, upsample=upsample, class_agnostic=class_agnostic,
                         **kwargs)
        if flow_activation not in FLOW_ACTIVATIONS:
            raise ValueError(f"HTCMaskHead: flow_activation must be one of {FLOW_ACTIVATIONS}, got "
                             f"{flow_activation!r}.")
        self.with_flow, self.flow_activation = bool(with_flow), flow_activation
        self.flow = None

    def build(self, input_shape):
        if self.with_flow:  # previous features (channels) -> this head's input channels
            self.flow = keras.layers.Conv2D(input_shape[-1], 1, activation=self.flow_activation, name="flow")
            self.flow.build((None, None, None, self.channels))
        super().build(input_shape)

    def call(self, roi_features, previous=None):
        if (previous is None) == self.with_flow:
            raise ValueError(f"HTCMaskHead {self.name}: with_flow={self.with_flow} needs previous "
                             f"{'features' if self.with_flow else 'None'}.")
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [shape[0] * shape[1], *roi_features.shape[2:]])
        if previous is not None:
            x = x + self.flow(tf.reshape(previous, [shape[0] * shape[1], *previous.shape[2:]]))
        x = run_conv_stack(x, self.convs, self.norms)
        features = tf.reshape(x, [shape[0], shape[1], *x.shape[1:]])
        logits = self.logits(tf.nn.relu(self.upsampler(x)))
        return tf.reshape(logits, [shape[0], shape[1], *logits.shape[1:]]), features

    def get_config(self):
        config = super().get_config()
        config.update(with_flow=self.with_flow, flow_activation=self.flow_activation)
        return config


@keras.saving.register_keras_serializable(package="tfdet")
class SemanticHead(keras.layers.Layer):
    """call({level: [B, H_l, W_l, C]}) -> (logits [B, H_f, W_f, num_classes], features [B, H_f, W_f, channels])
    at the fusion level `fusion_level` (3: stride 8); `fusion`: one of FUSIONS (module docstring)."""

    def __init__(self, num_classes, levels=(2, 3, 4, 5, 6), fusion_level=3, num_convs=4, channels=256,
                 fusion="conv_then_resize", **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.levels = int(num_classes), tuple(int(lvl) for lvl in levels)
        self.fusion_level, self.num_convs, self.channels = int(fusion_level), int(num_convs), int(channels)
        if self.fusion_level not in self.levels:
            raise ValueError(f"SemanticHead: fusion_level {fusion_level} is not one of levels {self.levels}.")
        if fusion not in FUSIONS:
            raise ValueError(f"SemanticHead: fusion must be one of {FUSIONS}, got {fusion!r}.")
        self.fusion = fusion
        self.laterals = [keras.layers.Conv2D(self.channels, 1, activation="relu", name=f"lateral{lvl}")
                         for lvl in self.levels]
        self.convs = [keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", name=f"conv{i + 1}")
                      for i in range(self.num_convs)]
        self.embedding = keras.layers.Conv2D(self.channels, 1, activation="relu", name="embedding")
        self.classifier = keras.layers.Conv2D(self.num_classes, 1, name="logits")

    def call(self, features):
        target = features[self.fusion_level]
        size = tf.shape(target)[1:3]
        x = 0.0
        for lvl, lateral in zip(self.levels, self.laterals):
            y = features[lvl]
            if lvl == self.fusion_level:
                y = lateral(y)
            elif self.fusion == "resize_then_conv":  # torch F.interpolate(bilinear, align_corners=True)
                y = lateral(tf.raw_ops.ResizeBilinear(images=y, size=size, align_corners=True))
            else:
                y = tf.image.resize(lateral(y), size, method="bilinear")
            x = x + y
        for conv in self.convs:
            x = conv(x)
        return self.classifier(x), self.embedding(x)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, levels=self.levels, fusion_level=self.fusion_level,
                      num_convs=self.num_convs, channels=self.channels, fusion=self.fusion)
        return config


def semantic_loss(logits, labels, weight=0.2, ignore_label=IGNORE_LABEL):
    """Cross-entropy of [B, h, w, C] logits against [B, H, W] labels (nearest-downsampled to h x w: the
    centre pixel of each cell, as tfdet.data.pipeline's `semantic_stride`; labels already at h x w are
    used as they are), mean
    over the pixels not labelled `ignore_label`, times `weight`."""
    labels = tf.cast(labels, tf.int32)[..., None]
    labels = tf.image.resize(labels, tf.shape(logits)[1:3], method="nearest")[..., 0]
    return weight * losses.cross_entropy(logits, labels, ignore_index=ignore_label)
