"""A tiny plain ConvNet backbone for tests and CPU runs (not a published architecture).

Stem: two 3x3 stride-2 convs (level 2, stride 4); then one 3x3 stride-2 conv + one 3x3 conv per
level up to level 5; ReLU after every conv, optional normalization. Returns {level: map} like ResNet.
"""

import keras

from tfdet.modeling.conv_norm import conv, make_norm, norm_spec


def tiny_convnet(channels=(16, 32, 64, 128), norm=None, out_levels=(2, 3, 4, 5), input_shape=(None, None, 3),
                 name="tiny_convnet"):
    """Builds the tiny backbone; channels are those of levels 2..5."""
    channels = tuple(int(c) for c in channels)
    if len(channels) != 4:
        raise ValueError(f"tiny_convnet: channels needs 4 entries (levels 2-5), got {channels}.")
    out_levels = tuple(int(level) for level in out_levels)
    if not out_levels or not set(out_levels) <= {2, 3, 4, 5}:
        raise ValueError(f"tiny_convnet: out_levels must be a non-empty subset of (2, 3, 4, 5), got {out_levels}.")
    norm_spec(norm)

    def block(x, filters, name, strides=1):
        x = conv(x, filters, 3, name, strides=strides, use_bias=norm is None)
        if norm is not None:
            x = make_norm(norm, f"{name}_norm")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    images = keras.Input(shape=input_shape, name="images")
    x = block(images, channels[0], "stem1", strides=2)
    features = {2: block(x, channels[0], "stem2", strides=2)}
    for level in (3, 4, 5):
        x = block(features[level - 1], channels[level - 2], f"level{level}_down", strides=2)
        features[level] = block(x, channels[level - 2], f"level{level}_conv")
    return keras.Model(images, {level: features[level] for level in out_levels}, name=name)
