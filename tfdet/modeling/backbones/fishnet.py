"""FishNet (Sun et al., NeurIPS 2018): tail (down), body (up) and head (down) of pre-activation
bottlenecks, joined by concatenation-based transfers, NHWC.

The architecture is the one of the official implementation (kevin-ssy/FishNet): a 3-conv stem to
stride 4, then ten stages over 128, 256, 512 | 512, 512, 384, 256 | 320, 832, 1600 planes:
  tail  stages 0-2: residual blocks then 2x2 max pool (strides 8, 16, 32);
  bridge stage 3:   BN-ReLU-1x1 "score" to 2C channels, squeeze-excitation gate, residual blocks;
  body  stages 4-6: an "UP" block whose shortcut sums groups of k input channels, dilated blocks,
                    nearest 2x upsampling, concatenated with transferred tail features (strides 16, 8, 4);
  head  stages 7-9: residual blocks then 2x2 max pool, concatenated with transferred body features
                    (strides 8, 16, 32).
The classifier ends with BN-ReLU-1x1 conv to half the channels, BN-ReLU, global pooling and `fc`.
Classifier parameter counts (PyTorch's count: no BN statistics) equal those of the official code:
FishNet-99 16,628,904; FishNet-150 24,959,400 (the figures imgclsmob's test of the verbatim official
model asserts); FishNet-201 (official config, no published count) 44,584,552. With `shortcut_bias=True`
(biased projection shortcuts): 16,630,312 / 24,960,808, the counts often quoted for FishNet. Those
are the figures of the `glasses` library's model table (FrancescoSaverioZuppichini/glasses, a
reimplementation after zsef123/Fishnet-PyTorch), whose pre-activation 1x1 shortcut conv keeps
PyTorch's default bias=True where the official code sets bias=False. The released checkpoints agree with
the code: a public conversion script loads fishnet150_ckpt_welltrained.tar into the official model with
strict=True after renaming a few keys (fish.fish.3.x, fish.fish.9.x), so it holds no shortcut biases.

Feature maps for detection (`out_levels`): level 2 is the body's stride-4 output (320 channels),
levels 3, 4, 5 the head's outputs at strides 8, 16, 32 (832, 1600, 2112 channels). Input height and
width must be multiples of 32 (the up path concatenates 2x-upsampled maps with the tail's).
"""

import keras
import tensorflow as tf

from tfdet.modeling.backbones.resnet import freeze_layers
from tfdet.modeling.conv_norm import conv, make_norm, max_pool, norm_spec

PLANES = (128, 256, 512, 512, 512, 384, 256, 320, 832, 1600)
STEM_PLANES = 64
NUM_DOWN = 3                    # tail stages; stage 3 is the bridge; stages 4-6 up; 7-9 head
TRANSFER_FROM = (2, 1, 0, 6, 5, 4)  # stage 4 + i concatenates the transferred feats[TRANSFER_FROM[i]]
# depth: (residual blocks per stage, transfer blocks for stages 4-9)
CONFIGS = {
    99: ((2, 2, 6, 2, 1, 1, 1, 1, 2, 2), (1, 1, 1, 1, 1, 4)),
    150: ((2, 4, 8, 4, 2, 2, 2, 2, 2, 4), (2, 2, 2, 2, 2, 4)),
    201: ((3, 4, 12, 4, 2, 2, 2, 2, 3, 10), (2, 2, 2, 2, 2, 9)),
}


@keras.saving.register_keras_serializable(package="tfdet")
class ChannelGroupSum(keras.layers.Layer):
    """Sums each run of `k` consecutive channels: [N, H, W, C] -> [N, H, W, C / k] (FishNet's UP
    shortcut, which keeps the identity path while the body reduces channels)."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, inputs):
        shape = tf.shape(inputs)
        grouped = tf.reshape(inputs, tf.concat([shape[:3], [inputs.shape[-1] // self.k, self.k]], 0))
        return tf.reduce_sum(grouped, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] // self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="tfdet")
class CheckSizeMultiple(keras.layers.Layer):
    """Identity that fails with a clear message unless height and width are multiples of `multiple`."""

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, inputs):
        size = tf.shape(inputs)[1:3]
        check = tf.debugging.assert_equal(
            size % self.multiple, tf.zeros_like(size),
            message=f"{self.name}: image height and width must be multiples of {self.multiple}")
        with tf.control_dependencies([check]):
            return tf.identity(inputs)

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def _bn_relu(x, norm, name):
    return keras.layers.ReLU(name=f"{name}_relu")(make_norm(norm, name)(x))


def _block(x, planes, name, norm, up_k=None, dilation=1, shortcut_bias=False):
    """Pre-activation bottleneck (BN-ReLU-conv x3, planes / 4 inner channels). up_k: the UP block,
    whose shortcut sums groups of up_k channels; otherwise a BN-ReLU-1x1 projection when channels change."""
    channels = x.shape[-1]
    y = conv(_bn_relu(x, norm, f"{name}_bn1"), planes // 4, 1, f"{name}_conv1")
    y = conv(_bn_relu(y, norm, f"{name}_bn2"), planes // 4, 3, f"{name}_conv2", dilation=dilation)
    y = conv(_bn_relu(y, norm, f"{name}_bn3"), planes, 1, f"{name}_conv3")
    if up_k is not None:
        shortcut = x if up_k == 1 else ChannelGroupSum(up_k, name=f"{name}_squeeze")(x)
    elif channels != planes:
        shortcut = conv(_bn_relu(x, norm, f"{name}_shortcut_bn"), planes, 1, f"{name}_shortcut_conv",
                        use_bias=shortcut_bias)
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def _blocks(x, planes, count, name, norm, up_k=None, dilation=1, shortcut_bias=False):
    for i in range(count):
        x = _block(x, planes, f"{name}{i}", norm, up_k=up_k if i == 0 else None, dilation=dilation,
                   shortcut_bias=shortcut_bias)
    return x


def _score(x, out_channels, name, norm, pool):
    """BN-ReLU-1x1 conv to half the channels, BN-ReLU, then a biased 1x1 conv (`fc` after pooling)."""
    half = x.shape[-1] // 2
    x = conv(_bn_relu(x, norm, f"{name}_bn1"), half, 1, f"{name}_conv")
    x = _bn_relu(x, norm, f"{name}_bn2")
    if pool:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        return keras.layers.Dense(out_channels, name="fc")(x)
    return conv(x, out_channels, 1, f"{name}_fc", use_bias=True)


def _squeeze_excite(x, channels, name, norm):
    """BN-ReLU, global pool, 1x1 conv to channels / 16, ReLU, 1x1 conv to channels, sigmoid."""
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(_bn_relu(x, norm, f"{name}_bn"))
    y = keras.layers.ReLU(name=f"{name}_relu2")(conv(y, channels // 16, 1, f"{name}_squeeze", use_bias=True))
    return keras.layers.Activation("sigmoid", name=f"{name}_gate")(conv(y, channels, 1, f"{name}_excite",
                                                                        use_bias=True))


def fishnet(depth=99, norm="bn", frozen_stages=-1, out_levels=(2, 3, 4, 5), include_top=False, num_classes=1000,
            shortcut_bias=False, input_shape=(None, None, 3), name=None):
    """Builds FishNet-99 / 150 / 201 as a functional keras.Model.

    Args:
      depth: 99, 150 or 201.
      norm: norm spec of tfdet.modeling.conv_norm ("bn" by default: FishNet is pre-activation, every
        block normalizes its input; "frozen_bn", "sync_bn", "gn" as for ResNet).
      frozen_stages: -1 trains everything; k in 0..3 freezes the stem and tail stages 1..k.
      out_levels: levels returned from {2, 3, 4, 5} (see module docstring).
      include_top: the ImageNet classifier returning logits [N, num_classes].
      shortcut_bias: biases on the 4 projection-shortcut convs (tail stages 0-2 and the bridge: 128 +
        256 + 512 + 512 = 1408 parameters). The official code (and so its released checkpoints) has
        none; the `glasses` reimplementation has them (its counts 16,630,312 / 24,960,808 are the ones
        often quoted), so weights converted from it load with True.

    Returns a keras.Model mapping images [N, H, W, 3] (H, W multiples of 32) to
    {level: [N, H / 2**level, W / 2**level, C_level]} or logits.
    """
    if depth not in CONFIGS:
        raise ValueError(f"fishnet: depth must be one of {sorted(CONFIGS)}, got {depth}.")
    if not -1 <= frozen_stages <= NUM_DOWN:
        raise ValueError(f"fishnet: frozen_stages must be in [-1, {NUM_DOWN}], got {frozen_stages}.")
    out_levels = tuple(int(level) for level in out_levels)
    if not include_top and (not out_levels or not set(out_levels) <= {2, 3, 4, 5}):
        raise ValueError(f"fishnet: out_levels must be a non-empty subset of (2, 3, 4, 5), got {out_levels}.")
    norm_spec(norm)
    res_blocks, trans_blocks = CONFIGS[depth]

    images = keras.Input(shape=input_shape, name="images")
    x = CheckSizeMultiple(32, name="check_size")(images)
    for i, (channels, stride) in enumerate([(STEM_PLANES // 2, 2), (STEM_PLANES // 2, 1), (STEM_PLANES, 1)]):
        x = conv(x, channels, 3, f"conv{i + 1}", strides=stride)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(make_norm(norm, f"bn{i + 1}")(x))
    feats = [max_pool(x, 3, 2, "pool1", pad=1)]  # feats[i] is the input of stage i
    for stage in range(len(PLANES)):
        x, planes, prefix = feats[stage], PLANES[stage], f"stage{stage}"
        if stage < NUM_DOWN:  # tail
            x = _blocks(x, planes, res_blocks[stage], f"{prefix}_res", norm, shortcut_bias=shortcut_bias)
            x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
        elif stage == NUM_DOWN:  # bridge: score to 2C, SE gate, residual blocks
            score = _score(x, 2 * planes, f"{prefix}_score", norm, pool=False)
            gate = _squeeze_excite(score, planes, f"{prefix}_se", norm)
            x = _blocks(score, planes, res_blocks[stage], f"{prefix}_res", norm, shortcut_bias=shortcut_bias)
            x = keras.layers.Add(name=f"{prefix}_out")([keras.layers.Multiply(name=f"{prefix}_gated")([x, gate]),
                                                        gate])
        else:
            source = TRANSFER_FROM[stage - NUM_DOWN - 1]
            if stage <= 2 * NUM_DOWN:  # body: UP block, dilated blocks, upsample
                up_k, dilation = x.shape[-1] // planes, 2 ** (stage - NUM_DOWN - 1)
                x = _blocks(x, planes, res_blocks[stage], f"{prefix}_res", norm, up_k=up_k, dilation=dilation)
                x = keras.layers.UpSampling2D(2, name=f"{prefix}_up")(x)
            else:  # head (its blocks keep their channels: no projection shortcut)
                x = _blocks(x, planes, res_blocks[stage], f"{prefix}_res", norm, shortcut_bias=shortcut_bias)
                x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
            transferred = feats[source]
            transferred = _blocks(transferred, transferred.shape[-1], trans_blocks[stage - NUM_DOWN - 1],
                                  f"{prefix}_trans", norm, shortcut_bias=shortcut_bias)
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, transferred])
        feats.append(x)
    if include_top:
        outputs = _score(feats[-1], num_classes, "score", norm, pool=True)
    else:
        levels = {2: feats[2 * NUM_DOWN + 1], 3: feats[2 * NUM_DOWN + 2], 4: feats[2 * NUM_DOWN + 3],
                  5: feats[2 * NUM_DOWN + 4]}
        outputs = {level: levels[level] for level in out_levels}
    model = keras.Model(images, outputs, name=name or f"fishnet{depth}")
    if frozen_stages >= 0:
        freeze_layers(model, ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
                      + [f"stage{i}_" for i in range(frozen_stages)])
    return model
