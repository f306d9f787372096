"""FrozenBatchNormalization: batch normalization with fixed statistics (the detection default)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdet")
class FrozenBatchNormalization(keras.layers.Layer):
    """Batch normalization that always normalizes with its stored statistics, in training too.

    y = (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta over the last axis.

    The statistics never change. With `requires_grad=False` (default; detectron2's FrozenBatchNorm2d,
    mmdetection's `norm_cfg=dict(type='BN', requires_grad=False)` with `norm_eval=True`) gamma and
    beta are fixed too; with `requires_grad=True` (mmdetection's default `requires_grad=True,
    norm_eval=True`) gamma and beta stay trainable while the statistics stay fixed. Weight names match
    keras BatchNormalization (gamma, beta, moving_mean, moving_variance), so weights move between them.
    """

    def __init__(self, epsilon=1e-5, requires_grad=False, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.requires_grad = bool(requires_grad)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"FrozenBatchNormalization '{self.name}': the channel axis must be known.")
        shape = (channels,)
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones", trainable=self.requires_grad)
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros", trainable=self.requires_grad)
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape, initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape, initializer="ones",
                                               trainable=False)

    def call(self, inputs):
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        return inputs * tf.cast(scale, inputs.dtype) + tf.cast(shift, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, requires_grad=self.requires_grad)
        return config
