"""ResNet (He et al. 2016) and ResNeXt (Xie et al. 2017) bottleneck backbones, NHWC.

Layer names follow the torchvision / mmdetection state-dict module paths with '.' replaced by '_'
(`layer3_5_conv2`, `layer1_0_downsample_1`), which is what tfdet.modeling.backbones.weights relies
on to import their checkpoints.
"""

import keras

from tfdet.modeling.conv_norm import conv, make_norm, max_pool, norm_spec

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STYLES = ("pytorch", "caffe")


def _bottleneck(x, planes, stride, name, *, groups, base_width, style, norm, dcn, downsample):
    """Bottleneck block; `pytorch` style strides the 3x3 conv, `caffe` style the first 1x1."""
    width = int(planes * base_width / 64) * groups
    out_channels = planes * 4
    stride1, stride2 = (stride, 1) if style == "caffe" else (1, stride)
    y = conv(x, width, 1, f"{name}_conv1", strides=stride1)
    y = keras.layers.ReLU(name=f"{name}_relu1")(make_norm(norm, f"{name}_bn1")(y))
    y = conv(y, width, 3, f"{name}_conv2", strides=stride2, groups=groups, dcn=dcn)
    y = keras.layers.ReLU(name=f"{name}_relu2")(make_norm(norm, f"{name}_bn2")(y))
    y = conv(y, out_channels, 1, f"{name}_conv3")
    y = make_norm(norm, f"{name}_bn3")(y)
    if downsample:
        x = conv(x, out_channels, 1, f"{name}_downsample_0", strides=stride)
        x = make_norm(norm, f"{name}_downsample_1")(x)
    y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def freeze_layers(model, prefixes):
    """Sets trainable=False on every layer whose name starts with one of `prefixes` (frozen
    normalization layers then also run in inference mode)."""
    for layer in model.layers:
        if layer.name.startswith(tuple(prefixes)):
            layer.trainable = False


def resnet(depth=50, groups=1, base_width=64, style="pytorch", norm="frozen_bn", frozen_stages=-1,
           stage_with_dcn=(False, False, False, False), dcn=None, out_levels=(2, 3, 4, 5), include_top=False,
           num_classes=1000, input_shape=(None, None, 3), name=None):
    """Builds a ResNet / ResNeXt as a functional keras.Model.

    Args:
      depth: 50, 101 or 152.
      groups, base_width: ResNeXt cardinality and width per group (1, 64 is ResNet; 32, 4 is 32x4d).
      style: "pytorch" (stride on the 3x3 conv) or "caffe" (stride on the first 1x1 conv).
      norm: norm spec of tfdet.modeling.conv_norm ("frozen_bn", "bn", "sync_bn", "gn" or a dict).
      frozen_stages: -1 trains everything; k >= 0 freezes the stem and stages 1..k (weights and
        normalization statistics), as mmdetection's `frozen_stages`.
      stage_with_dcn: 4 booleans; the 3x3 convs of those stages become deformable convolutions
        configured by `dcn` = {"modulated": bool, "deformable_groups": int}.
      out_levels: pyramid levels returned (level l has stride 2**l; C2..C5 are stages 1..4).
      include_top: build the ImageNet classifier (global average pool + `fc`) returning logits.

    Returns a keras.Model mapping images [N, H, W, 3] to {level: [N, ceil(H / 2**l), ceil(W / 2**l), C_l]}
    (C2..C5 = 256, 512, 1024, 2048 channels) or, with include_top, to logits [N, num_classes].
    Serialized models return the dict with string keys ("2"); consumers accept both.
    """
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"resnet: depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}.")
    if style not in STYLES:
        raise ValueError(f"resnet: style must be one of {STYLES}, got {style!r}.")
    if not -1 <= frozen_stages <= 4:
        raise ValueError(f"resnet: frozen_stages must be in [-1, 4], got {frozen_stages}.")
    stage_with_dcn = tuple(bool(s) for s in stage_with_dcn)
    if len(stage_with_dcn) != 4:
        raise ValueError(f"resnet: stage_with_dcn needs 4 entries (stages 1-4), got {stage_with_dcn}.")
    if any(stage_with_dcn) and dcn is None:
        raise ValueError("resnet: stage_with_dcn selects stages but dcn is None; pass "
                         "dcn={'modulated': bool, 'deformable_groups': int}.")
    out_levels = tuple(int(level) for level in out_levels)
    if not include_top and (not out_levels or not set(out_levels) <= {2, 3, 4, 5}):
        raise ValueError(f"resnet: out_levels must be a non-empty subset of (2, 3, 4, 5), got {out_levels}.")
    norm_spec(norm)
    if name is None:
        name = f"resnext{depth}_{groups}x{base_width}d" if groups > 1 else f"resnet{depth}"

    images = keras.Input(shape=input_shape, name="images")
    x = conv(images, 64, 7, "conv1", strides=2)
    x = keras.layers.ReLU(name="relu")(make_norm(norm, "bn1")(x))
    x = max_pool(x, 3, 2, "maxpool", pad=1)
    features = {}
    for stage, blocks in enumerate(STAGE_BLOCKS[depth]):
        planes = 64 * 2 ** stage
        for block in range(blocks):
            x = _bottleneck(x, planes, (1 if stage == 0 else 2) if block == 0 else 1, f"layer{stage + 1}_{block}",
                            groups=groups, base_width=base_width, style=style, norm=norm,
                            dcn=dcn if stage_with_dcn[stage] else None, downsample=block == 0)
        features[stage + 2] = x
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
        outputs = keras.layers.Dense(num_classes, name="fc")(x)
    else:
        outputs = {level: features[level] for level in out_levels}
    model = keras.Model(images, outputs, name=name)
    if frozen_stages >= 0:
        freeze_layers(model, ["conv1", "bn1"] + [f"layer{i}_" for i in range(1, frozen_stages + 1)])
    return model


def resnext(depth=101, groups=32, base_width=4, **kwargs):
    """ResNeXt: resnet() with grouped 3x3 convs (32x4d by default; 64x4d with groups=64)."""
    return resnet(depth=depth, groups=groups, base_width=base_width, **kwargs)
