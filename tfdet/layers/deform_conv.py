"""Deformable convolution layers: DeformConv2D (DCN v1) and ModulatedDeformConv2D (DCN v2)."""

import keras
import tensorflow as tf

from tfdet.ops.deform_conv import deform_conv2d


def _pair(value, name):
    value = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
    return value


def _explicit_padding(padding, kernel_size, dilation_rate):
    """'same' (odd kernels: output ceil(H / stride), symmetric), 'valid', an int or a pair."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if kernel_size[0] % 2 == 0 or kernel_size[1] % 2 == 0:
            raise ValueError(f"padding='same' needs an odd kernel_size for symmetric padding, got {kernel_size}; "
                             "pass explicit padding instead.")
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation_rate))
    return _pair(padding, "padding")


@keras.saving.register_keras_serializable(package="tfdet")
class DeformConv2D(keras.layers.Layer):
    """Deformable convolution v1 (Dai et al. 2017) on NHWC inputs.

    By default the layer owns the offset branch: a regular convolution of the same kernel size,
    strides, padding and dilation with 2 * deformable_groups * kh * kw outputs, zero-initialized so
    that the layer starts as a plain convolution. With `use_offset_conv=False` the offsets are passed
    to call() instead (e.g. from Guided Anchoring's shape branch).

    Call: layer(inputs[N, H, W, C]) or layer(inputs, offsets[N, Ho, Wo, 2 * dg * kh * kw]).
    Returns [N, Ho, Wo, filters]; offsets follow tfdet.ops.deform_conv2d ((dy, dx) per kernel point).
    """

    modulated = False

    def __init__(self, filters, kernel_size=3, strides=1, padding="same", dilation_rate=1, groups=1,
                 deformable_groups=1, use_bias=True, use_offset_conv=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
        self._pads = _explicit_padding(self.padding, self.kernel_size, self.dilation_rate)
        self.groups, self.deformable_groups = int(groups), int(deformable_groups)
        if self.filters % self.groups:
            raise ValueError(f"{type(self).__name__}: filters ({filters}) must be divisible by groups ({groups}).")
        self.use_bias, self.use_offset_conv, self.impl = bool(use_bias), bool(use_offset_conv), impl
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    @property
    def _taps(self):
        return self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]

    def build(self, input_shape, *unused_shapes):
        channels = input_shape[-1]
        if channels is None or channels % self.groups or channels % self.deformable_groups:
            raise ValueError(f"{type(self).__name__}: input channels ({channels}) must be known and divisible by "
                             f"groups ({self.groups}) and deformable_groups ({self.deformable_groups}).")
        self.kernel = self.add_weight(name="kernel", shape=(*self.kernel_size, channels // self.groups, self.filters),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
                     if self.use_bias else None)
        if self.use_offset_conv:
            outputs = self._taps * (3 if self.modulated else 2)
            self.offset_kernel = self.add_weight(name="offset_kernel", shape=(*self.kernel_size, channels, outputs),
                                                 initializer="zeros")
            self.offset_bias = self.add_weight(name="offset_bias", shape=(outputs,), initializer="zeros")

    def _offset_branch(self, inputs):
        """Offsets (and the mask, through a sigmoid, when modulated) from the zero-initialized conv."""
        (ph, pw) = self._pads
        raw = tf.nn.conv2d(inputs, tf.cast(self.offset_kernel, inputs.dtype), strides=[1, *self.strides, 1],
                           padding=[[0, 0], [ph, ph], [pw, pw], [0, 0]], dilations=[1, *self.dilation_rate, 1])
        raw = tf.nn.bias_add(raw, tf.cast(self.offset_bias, inputs.dtype))
        if not self.modulated:
            return raw, None
        return raw[..., :2 * self._taps], tf.sigmoid(raw[..., 2 * self._taps:])

    def call(self, inputs, offsets=None, mask=None):
        if self.use_offset_conv:
            if offsets is not None or mask is not None:
                raise ValueError(f"{type(self).__name__}: offsets/mask are computed by the layer's offset conv; "
                                 "build it with use_offset_conv=False to pass them in.")
            offsets, mask = self._offset_branch(inputs)
        elif offsets is None or (self.modulated and mask is None):
            raise ValueError(f"{type(self).__name__}(use_offset_conv=False) needs offsets"
                             f"{' and mask' if self.modulated else ''} in call().")
        dtype = inputs.dtype
        return deform_conv2d(inputs, offsets, tf.cast(self.kernel, dtype), mask=mask,
                             bias=None if self.bias is None else tf.cast(self.bias, dtype), strides=self.strides,
                             padding=self._pads, dilations=self.dilation_rate, groups=self.groups,
                             deformable_groups=self.deformable_groups, impl=self.impl)

    def compute_output_shape(self, input_shape, *unused_shapes):
        n, h, w, _ = input_shape
        sizes = []
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.strides, self._pads, self.dilation_rate):
            sizes.append(None if size is None else (size + 2 * p - d * (k - 1) - 1) // s + 1)
        return (n, *sizes, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
            padding=self.padding if isinstance(self.padding, str) else list(self.padding),
            dilation_rate=list(self.dilation_rate), groups=self.groups, deformable_groups=self.deformable_groups,
            use_bias=self.use_bias, use_offset_conv=self.use_offset_conv,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer), impl=self.impl)
        return config


@keras.saving.register_keras_serializable(package="tfdet")
class ModulatedDeformConv2D(DeformConv2D):
    """Modulated deformable convolution (DCN v2, Zhu et al. 2019).

    The offset branch is one zero-initialized convolution with 3 * deformable_groups * kh * kw outputs:
    the first 2 * dg * kh * kw are the offsets, the rest pass through a sigmoid as the mask, so the layer
    starts as a plain convolution scaled by 0.5 (as in the paper's implementation). With
    `use_offset_conv=False`, call(inputs, offsets, mask) takes both explicitly.
    """

    modulated = True
