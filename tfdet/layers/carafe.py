"""CARAFEUpsample (the paper's "CARAFE pack") and `make_upsampler`, the upsampling switch of FPN and mask heads."""

import keras
import tensorflow as tf

from tfdet.ops.carafe import carafe


def _positive_int(value, name, odd=False):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (odd and value % 2 == 0):
        raise ValueError(f"CARAFEUpsample: {name} must be a positive {'odd ' if odd else ''}int, got {value!r}.")
    return value


@keras.saving.register_keras_serializable(package="tfdet")
class CARAFEUpsample(keras.layers.Layer):
    """Content-aware upsampling by `scale_factor` (CARAFE, Wang et al. ICCV 2019; mmcv CARAFEPack).

    [N, H, W, C] -> [N, H*s, W*s, C]:
      1. channel compressor: 1x1 conv to `compressed_channels`;
      2. content encoder: `encoder_kernel` conv (dilation `encoder_dilation`, same padding) to
         s*s * up_group * up_kernel**2 channels;
      3. pixel shuffle (`tf.nn.depth_to_space`) to [N, H*s, W*s, up_group * up_kernel**2];
      4. softmax over the up_kernel**2 taps of each group;
      5. reassembly of the input with `tfdet.ops.carafe` (C must be divisible by up_group).

    Channel convention of the content encoder's output: channel (i*s + j) * G*k*k + g*k*k + dy*k + dx is
    the logit of tap (dy, dx), group g, for the output sub-pixel (i, j) of each input pixel, because
    depth_to_space puts the sub-pixel position outermost. (PyTorch's pixel_shuffle, used by mmcv, puts
    it innermost: channel (g*k*k + dy*k + dx) * s*s + i*s + j; permute the conv's output channels
    accordingly when porting mmcv weights, as tfdet.zoo.mmdet.carafe.encoder_kernel / encoder_bias do.)

    Initialization follows mmcv: Xavier-uniform compressor, N(0, 0.001) encoder, zero biases, so that
    training starts close to uniform kernels (nearest upsampling of a k x k box filter).
    """

    def __init__(self, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1,
                 compressed_channels=64, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.scale_factor = _positive_int(scale_factor, "scale_factor")
        self.up_kernel = _positive_int(up_kernel, "up_kernel", odd=True)
        self.up_group = _positive_int(up_group, "up_group")
        self.encoder_kernel = _positive_int(encoder_kernel, "encoder_kernel", odd=True)
        self.encoder_dilation = _positive_int(encoder_dilation, "encoder_dilation")
        self.compressed_channels = _positive_int(compressed_channels, "compressed_channels")
        if impl not in (None, "fused", "composite"):
            raise ValueError(f"CARAFEUpsample: impl must be None, 'fused' or 'composite', got {impl!r}.")
        self.impl = impl
        self.channel_compressor = keras.layers.Conv2D(
            compressed_channels, 1, kernel_initializer="glorot_uniform", dtype=self.dtype_policy,
            name="channel_compressor")
        self.content_encoder = keras.layers.Conv2D(
            scale_factor ** 2 * up_group * up_kernel ** 2, encoder_kernel, padding="same",
            dilation_rate=encoder_dilation, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=self.dtype_policy, name="content_encoder")

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != 4 or channels is None:
            raise ValueError(f"CARAFEUpsample: input must be [N, H, W, C] with a known C, got {input_shape}.")
        if channels % self.up_group:
            raise ValueError(f"CARAFEUpsample: input channels ({channels}) must be divisible by up_group "
                             f"({self.up_group}).")
        self.channel_compressor.build(input_shape)
        self.content_encoder.build((*input_shape[:3], self.compressed_channels))

    def call(self, inputs):
        logits = self.content_encoder(self.channel_compressor(inputs))
        logits = tf.nn.depth_to_space(tf.cast(logits, tf.float32), self.scale_factor)
        taps = self.up_kernel ** 2
        shape = tf.shape(logits)
        grouped = tf.reshape(logits, tf.concat([shape[:3], [self.up_group, taps]], 0))
        kernels = tf.reshape(tf.nn.softmax(grouped, axis=-1), shape)
        return carafe(inputs, kernels, self.up_kernel, self.up_group, self.scale_factor, impl=self.impl)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale_factor
        return (n, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self):
        config = super().get_config()
        config.update(scale_factor=self.scale_factor, up_kernel=self.up_kernel, up_group=self.up_group,
                      encoder_kernel=self.encoder_kernel, encoder_dilation=self.encoder_dilation,
                      compressed_channels=self.compressed_channels, impl=self.impl)
        return config


UPSAMPLER_KINDS = ("nearest", "bilinear", "deconv", "carafe")


def make_upsampler(kind, scale_factor=2, channels=None, **carafe_kwargs):
    """A Keras layer that upsamples [N, H, W, C] by `scale_factor`, chosen by a config string.

      "nearest" / "bilinear": keras UpSampling2D (bilinear is half-pixel, as align_corners=False).
      "deconv": Conv2DTranspose(channels, kernel_size=s, strides=s), the mmdetection mask-head choice;
                needs `channels` (its output channels); no activation (add the ReLU yourself).
      "carafe": CARAFEUpsample(scale_factor, **carafe_kwargs); output channels = input channels.

    `name` may be given for any kind; other keyword arguments are CARAFEUpsample's and only valid for
    "carafe". Raises ValueError for an unknown kind, a missing `channels` or misplaced arguments.
    """
    name = carafe_kwargs.pop("name", None)
    if kind not in UPSAMPLER_KINDS:
        raise ValueError(f"make_upsampler: kind must be one of {UPSAMPLER_KINDS}, got {kind!r}.")
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
        raise ValueError(f"make_upsampler: scale_factor must be a positive int, got {scale_factor!r}.")
    if kind != "carafe" and carafe_kwargs:
        raise ValueError(f"make_upsampler: arguments {sorted(carafe_kwargs)} only apply to kind='carafe', "
                         f"not {kind!r}.")
    if kind in ("nearest", "bilinear"):
        return keras.layers.UpSampling2D(size=scale_factor, interpolation=kind, name=name)
    if kind == "deconv":
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"make_upsampler: kind='deconv' needs channels (a positive int), got {channels!r}.")
        return keras.layers.Conv2DTranspose(channels, scale_factor, strides=scale_factor, name=name)
    return CARAFEUpsample(scale_factor=scale_factor, name=name, **carafe_kwargs)
