"""A grouped 2-D convolution that trains at full speed on CPU.

Keras' TensorFlow backend compiles every grouped convolution with XLA (`keras.ops.conv`: "grouped
convolutions are broken on CPU without XLA"); on CPU XLA's gradient of a grouped conv is pathological
(a 3x3, 32-group, 256-channel conv on 100x168: forward + kernel gradient 17 s, vs 0.02 s for the kernel
gradient through TensorFlow's oneDNN kernels), which made ResNeXt-101's forward + backward at 800x1344
156 s (6.7 s with this layer; benchmarks.backbone_bench). `GroupedConv2D` is
keras.layers.Conv2D (same weights, same config) whose convolution calls `tf.nn.convolution`
directly; TensorFlow's CPU (oneDNN) and GPU (cuDNN) kernels both implement groups. With oneDNN turned
off (TF_ENABLE_ONEDNN_OPTS=0) TensorFlow's plain CPU kernels lack groups, so the layer then keeps
Keras' XLA path.
"""

import os

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfdet")
class GroupedConv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D (channels_last) computed by tf.nn.convolution, for `groups` > 1."""

    def convolution_op(self, inputs, kernel):
        if self.data_format != "channels_last" or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
            return super().convolution_op(inputs, kernel)
        return tf.nn.convolution(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                                 dilations=list(self.dilation_rate))
