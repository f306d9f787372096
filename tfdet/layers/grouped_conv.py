"""A grouped 2-D convolution that trains at full speed on any CPU (and GPU).

Keras' TensorFlow backend compiles every grouped convolution with XLA (`keras.ops.conv`: "grouped
convolutions are broken on CPU without XLA"); on CPU XLA's gradient of a grouped conv is pathological
(a 3x3, 32-group, 256-channel conv on 100x168: forward + kernel gradient 17 s, vs 0.02 s for the kernel
gradient through TensorFlow's oneDNN kernels), which made ResNeXt-101's forward + backward at 800x1344
156 s (6.7 s with this layer; benchmarks.backbone_bench). `GroupedConv2D` is keras.layers.Conv2D (same
weights, same config) whose convolution is one of two stock-TF computations, picked when the layer is
called (eagerly or while a tf.function / SavedModel export traces it):

- "native": one `tf.nn.convolution` with groups. Its gradients need grouped Conv2DBackpropInput /
  Conv2DBackpropFilter kernels: cuDNN (GPU) and TensorFlow's oneDNN CPU kernels have them; the plain
  Eigen CPU kernels, which TensorFlow uses when oneDNN is off, reject grouped gradients ("Gradients for
  grouped convolutions are not supported on CPU"). TensorFlow turns oneDNN on by default only on CPUs
  with AVX512_VNNI / AVX512_BF16 / AVX_VNNI / AMX, so which kernels run depends on the CPU as well as on
  TF_ENABLE_ONEDNN_OPTS; `cpu_has_grouped_gradients` therefore asks TensorFlow itself, once per process.
- "per_group": the input and kernel split into `groups` slices, one plain convolution per slice,
  concatenated; its gradients use plain kernels only. Used where the native gradient has no CPU kernel;
  on the plain CPU kernels its forward is also 3x faster than the native grouped forward
  (benchmarks.onednn_bench, part "grouped").

Both compute the same function (equal to float rounding), so a graph traced on one machine runs
forward anywhere, and either path works under XLA (jit_compile).
"""

import functools

import keras
import tensorflow as tf


@functools.lru_cache(maxsize=None)
def cpu_has_grouped_gradients():
    """True when TensorFlow's CPU kernels in this process compute gradients of grouped convolutions
    (its oneDNN kernels do, its plain Eigen kernels do not). Asked once, eagerly, with a 1-pixel conv."""
    with tf.init_scope(), tf.device("/CPU:0"):
        ones = tf.ones([1, 1, 1, 2])
        try:
            tf.raw_ops.Conv2DBackpropInput(input_sizes=[1, 1, 1, 2], filter=tf.ones([1, 1, 1, 2]), out_backprop=ones,
                                           strides=[1, 1, 1, 1], padding="VALID")
            tf.raw_ops.Conv2DBackpropFilter(input=ones, filter_sizes=[1, 1, 1, 2], out_backprop=ones,
                                            strides=[1, 1, 1, 1], padding="VALID")
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            return False
    return True


def native_gradients_on(device, cpu_ok, gpu_visible):
    """Whether a grouped convolution placed on `device` (a tensor's device string; "" when a graph leaves
    placement to TensorFlow, which then picks a visible GPU) has gradient kernels, given whether the CPU
    kernels have them (`cpu_ok`) and whether a GPU is visible."""
    device = device.upper()
    if "CPU" in device:
        return cpu_ok
    return bool(device) or gpu_visible or cpu_ok  # GPU/TPU name, or unplaced: a GPU if there is one


def grouped_conv2d(x, kernel, groups, strides, padding, dilations, per_group):
    """NHWC convolution with `groups` groups (kernel [kh, kw, C / groups, filters]) by stock TF ops: one
    grouped tf.nn.convolution, or (per_group) one convolution per group, concatenated."""
    conv = functools.partial(tf.nn.convolution, strides=strides, padding=padding, dilations=dilations)
    if not per_group:
        return conv(x, kernel)
    return tf.concat([conv(a, b) for a, b in zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))],
                     axis=-1)


@keras.saving.register_keras_serializable(package="tfdet")
class GroupedConv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D (channels_last) for `groups` > 1, computed by stock TF ops that have gradient
    kernels on the device it runs on (module docstring)."""

    def convolution_op(self, inputs, kernel):
        if self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        native = native_gradients_on(inputs.device or "", cpu_has_grouped_gradients(),
                                     bool(tf.config.list_logical_devices("GPU")))
        return grouped_conv2d(inputs, kernel, self.groups, list(self.strides), self.padding.upper(),
                              list(self.dilation_rate), per_group=not native)
