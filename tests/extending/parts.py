"""Parts defined outside tfdet, as a user's own package would (docs/extending.md): a backbone built
by module path ("tests.extending.parts:plug_net"), a 1-conv box head and a detector registered by name."""

import keras
import tensorflow as tf

from tfdet.modeling.detectors import Detector
from tfdet.modeling.registry import register_box_head, register_detector


def plug_net(width=8, out_levels=(2, 3, 4, 5), name="plug_net"):
    """A backbone: {level: map} with one stride-2 3x3 conv + ReLU per level (level l has stride 2**l)."""
    images = keras.Input((None, None, 3), name="images")
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="stem")(images)
    features = {}
    for level in range(2, max(out_levels) + 1):
        x = keras.layers.Conv2D(width * min(2 ** (level - 2), 4), 3, strides=2, padding="same", activation="relu",
                                name=f"level{level}")(x)
        features[level] = x
    return keras.Model(images, {level: features[level] for level in out_levels}, name=name)


@register_box_head("OneConv")
@keras.saving.register_keras_serializable(package="plugins")
class OneConvBoxHead(keras.layers.Layer):
    """A box head: one 3x3 conv + ReLU, global average pooling, then the classifier (C + 1 logits, the
    last background) and the box regressor (4 per class, or 4). Call on [B, K, S, S, C] RoI features."""

    def __init__(self, num_classes, class_agnostic=False, channels=16, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.class_agnostic, self.channels = int(num_classes), bool(class_agnostic), int(channels)
        self.conv = keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", name="conv")
        self.cls = keras.layers.Dense(self.num_classes + 1, name="cls")
        self.reg = keras.layers.Dense(4 if self.class_agnostic else 4 * self.num_classes, name="reg")

    def build(self, input_shape):
        self.conv.build((None, *input_shape[2:]))
        self.cls.build((None, self.channels))
        self.reg.build((None, self.channels))
        super().build(input_shape)

    def call(self, roi_features):
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [shape[0] * shape[1], *roi_features.shape[2:]])
        x = tf.reduce_mean(self.conv(x), axis=[1, 2])
        cls_logits = tf.reshape(self.cls(x), [shape[0], shape[1], self.num_classes + 1])
        return cls_logits, tf.reshape(self.reg(x), [shape[0], shape[1], -1])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_agnostic": self.class_agnostic,
                "channels": self.channels}


@register_detector("PlugRCNN")
@keras.saving.register_keras_serializable(package="plugins")
class PlugRCNN(Detector):
    """A two-stage detector that feeds its backbone images scaled to [0, 1] instead of standardized."""

    blocks = required = ("rpn", "roi")

    def features(self, images, training=False):
        levels = self.neck(self.backbone(tf.cast(images, tf.float32) / 255.0, training=training))
        return {int(k): v for k, v in levels.items()}
