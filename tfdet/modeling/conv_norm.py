"""Convolution and normalization helpers shared by the backbones, necks and heads.

Norm specs: a string ("frozen_bn", "bn", "sync_bn", "gn") or a dict {"type": ..., options}:
  frozen_bn  FrozenBatchNormalization (fixed statistics; `requires_grad` makes gamma/beta trainable)
  bn         keras BatchNormalization
  sync_bn    keras BatchNormalization(synchronized=True): statistics all-reduced across replicas
  gn         keras GroupNormalization (`num_groups`, default 32)
Every type takes `epsilon` (default BN_EPSILON = 1e-5); torchvision's v1 COCO checkpoints run their
FrozenBatchNorm2d with epsilon 0 ({"type": "frozen_bn", "epsilon": 0.0}).
BN layers use PyTorch's epsilon 1e-5 and momentum 0.1 (keras momentum 0.9), so imported weights
reproduce the reference outputs. None means no normalization.

Convolutions pad explicitly and symmetrically (PyTorch's `padding=dilation * (k - 1) // 2`) instead of
TF's asymmetric "same" for strided convs, so outputs match PyTorch checkpoints exactly: a strided conv
on an H-pixel map gives floor((H - 1) / stride) + 1 pixels.
"""

import keras
import numpy as np
import tensorflow as tf

import tfdet.layers as tfdet_layers
from tfdet.layers.grouped_conv import GroupedConv2D
from tfdet.layers.normalization import FrozenBatchNormalization

NORM_TYPES = ("frozen_bn", "bn", "sync_bn", "gn")
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# torchvision / FishNet init: normal(0, sqrt(2 / (k * k * out_channels))).
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def norm_spec(norm):
    """Validates a norm spec and returns it as a dict with a "type" key (or None)."""
    if norm is None:
        return None
    spec = {"type": norm} if isinstance(norm, str) else dict(norm)
    kind = spec.get("type")
    if kind not in NORM_TYPES:
        raise ValueError(f"norm must be None or one of {NORM_TYPES} (or a dict with such a 'type'), got {norm!r}.")
    allowed = {"frozen_bn": {"requires_grad"}, "gn": {"num_groups"}}.get(kind, set()) | {"epsilon"}
    unknown = set(spec) - allowed - {"type"}
    if unknown:
        raise ValueError(f"norm '{kind}' does not take options {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return spec


def make_norm(norm, name):
    """A normalization layer named `name` from a norm spec (see module docstring)."""
    spec = norm_spec(norm)
    if spec is None:
        raise ValueError(f"make_norm('{name}'): norm is None.")
    kind, epsilon = spec["type"], float(spec.get("epsilon", BN_EPSILON))
    if kind == "frozen_bn":
        return FrozenBatchNormalization(epsilon=epsilon, requires_grad=spec.get("requires_grad", False), name=name)
    if kind == "gn":
        return keras.layers.GroupNormalization(groups=spec.get("num_groups", 32), epsilon=epsilon, name=name)
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=BN_MOMENTUM,
                                           synchronized=(kind == "sync_bn"), name=name)


def _deform_layer(dcn, name):
    """(layer class, deformable groups, impl) of a dcn spec; the class is looked up in tfdet.layers when
    the conv is made (so a replacement registered there is used)."""
    dcn = dict(dcn)
    unknown = set(dcn) - {"modulated", "deformable_groups", "impl"}
    if unknown:
        raise ValueError(f"dcn for '{name}' takes keys 'modulated', 'deformable_groups' and 'impl', got "
                         f"{sorted(unknown)}.")
    class_name = "ModulatedDeformConv2D" if dcn.get("modulated", False) else "DeformConv2D"
    cls = getattr(tfdet_layers, class_name, None)
    if cls is None:
        raise ImportError(f"'{name}' asks for deformable convolution (dcn={dcn}), but tfdet.layers has no "
                          f"{class_name}.")
    return cls, int(dcn.get("deformable_groups", 1)), dcn.get("impl")


def conv(x, filters, kernel_size, name, strides=1, dilation=1, groups=1, use_bias=False, dcn=None):
    """Applies a conv named `name` to x with PyTorch-style symmetric padding dilation * (k - 1) // 2.

    With `dcn` = {"modulated": bool, "deformable_groups": int, optional "impl": None | "fused" |
    "composite"} the conv is tfdet.layers.DeformConv2D / ModulatedDeformConv2D.
    """
    pad = dilation * (kernel_size - 1) // 2
    if dcn is not None:
        cls, deformable_groups, impl = _deform_layer(dcn, name)
        return cls(filters, kernel_size, strides=strides, padding=pad, dilation_rate=dilation, groups=groups,
                   deformable_groups=deformable_groups, use_bias=use_bias, kernel_initializer=CONV_INIT,
                   impl=impl, name=name)(x)
    if pad and strides > 1:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad else "valid"
    layer = GroupedConv2D if groups > 1 else keras.layers.Conv2D  # Keras' own grouped conv trains slowly on CPU
    return layer(filters, kernel_size, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                 use_bias=use_bias, kernel_initializer=CONV_INIT, name=name)(x)


def max_pool(x, pool_size, strides, name, pad=0):
    """Max pooling with PyTorch-style symmetric padding. Zero padding equals PyTorch's -inf padding
    because every pooled map here follows a ReLU."""
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size, strides=strides, name=name)(x)


def count_parameters(model):
    """Number of parameters as PyTorch counts them: every weight except normalization statistics
    (moving_mean / moving_variance, which PyTorch keeps as buffers)."""
    stats = ("moving_mean", "moving_variance")
    return int(sum(np.prod(w.shape) for w in model.weights if w.path.split("/")[-1] not in stats))


def conv_stack(num_convs, channels, norm=None, kernel_size=3, name="conv"):
    """The layers of a tower of `num_convs` (kxk conv [+ norm] + ReLU), as two lists (convs, norms) for a
    layer to keep as attributes: convs `{name}1..`, norms `{name}1_norm..` (none without a norm; convs
    then keep their bias). Run it with `run_conv_stack`, build it with `build_conv_stack`."""
    norm = norm_spec(norm)
    convs = [keras.layers.Conv2D(channels, kernel_size, padding="same", use_bias=norm is None,
                                 kernel_initializer=keras.initializers.HeNormal(), name=f"{name}{i + 1}")
             for i in range(num_convs)]
    norms = [] if norm is None else [make_norm(norm, f"{name}{i + 1}_norm") for i in range(num_convs)]
    return convs, norms


def build_conv_stack(convs, norms, shape):
    """Builds a conv_stack for inputs of `shape` (NHWC); returns the output shape."""
    for i, conv in enumerate(convs):
        conv.build(shape)
        shape = (*shape[:-1], conv.filters)
        if norms:
            norms[i].build(shape)
    return shape


def run_conv_stack(x, convs, norms):
    for i, conv in enumerate(convs):
        x = conv(x)
        x = tf.nn.relu(norms[i](x) if norms else x)
    return x
