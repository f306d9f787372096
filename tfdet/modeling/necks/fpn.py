"""Feature Pyramid Network (Lin et al. 2017) as one serializable Keras layer."""

import keras
import tensorflow as tf

from tfdet.layers.carafe import make_upsampler
from tfdet.modeling.conv_norm import make_norm, norm_spec

UPSAMPLE_KINDS = ("nearest", "carafe")
EXTRA_KINDS = ("maxpool", "conv", "carafe_lateral")


@keras.saving.register_keras_serializable(package="tfdet")
class FPN(keras.layers.Layer):
    """Top-down feature pyramid with lateral 1x1 and output 3x3 convs, plus extra coarser levels.

    Call with a dict {level: C_level [N, H_l, W_l, C]} (int or str keys; level l has stride 2**l) that
    holds every level from `min_level` up to the backbone's top level; returns {level: P_level
    [N, H_l, W_l, out_channels]} for min_level..max_level. Levels above the backbone's top one are extra:
      extra="maxpool": P(l+1) = P(l) subsampled by 2 (1x1 max pool, stride 2; Faster/Mask R-CNN's P6);
      extra="conv":    a 3x3 stride-2 conv per extra level; the first reads C_top (extra_source="input",
                       RetinaNet) or P_top ("output"), later ones read the previous extra level, after
                       a ReLU when relu_before_extra (as the RetinaNet paper and detectron2 do).
      extra="carafe_lateral": mmdetection's FPN_CARAFE: each extra level gets a lateral, a 3x3 stride-2
                       conv (pad 1, no activation) on C_top for the first, on the previous extra lateral
                       after that; it joins the top-down path like a backbone level (through its own
                       upsampler, `upsample{l}` upsampling into level l) and P_extra is its output conv.
                       Needs upsample="carafe"; extra_source / relu_before_extra do not apply. Weights:
                       `lateral{l}`, `output{l}`, `upsample{l}` for every level, extra ones included.
    Top-down: upsample the coarser P by 2 ("nearest" or "carafe": tfdet.layers.carafe.make_upsampler),
    crop to the finer lateral's size (odd sizes) and add. `norm`: optional norm spec for every conv
    (convs then drop their bias).

    Typical: FPN(min_level=2, max_level=6) on C2-C5 (two-stage detectors), FPN(min_level=3,
    max_level=7, extra="conv") on C3-C5 (RetinaNet).
    """

    def __init__(self, out_channels=256, min_level=2, max_level=6, extra="maxpool", extra_source="input",
                 relu_before_extra=True, upsample="nearest", norm=None, impl=None, **kwargs):
        super().__init__(**kwargs)
        if min_level > max_level:
            raise ValueError(f"FPN: min_level {min_level} > max_level {max_level}.")
        if extra not in EXTRA_KINDS:
            raise ValueError(f"FPN: extra must be one of {EXTRA_KINDS}, got {extra!r}.")
        if extra_source not in ("input", "output"):
            raise ValueError(f"FPN: extra_source must be 'input' or 'output', got {extra_source!r}.")
        if upsample not in UPSAMPLE_KINDS:
            raise ValueError(f"FPN: upsample must be one of {UPSAMPLE_KINDS}, got {upsample!r}.")
        if extra == "carafe_lateral" and upsample != "carafe":
            raise ValueError(f"FPN: extra='carafe_lateral' (mmdetection FPN_CARAFE) needs upsample='carafe', got "
                             f"{upsample!r}.")
        self.out_channels, self.min_level, self.max_level = int(out_channels), int(min_level), int(max_level)
        self.extra, self.extra_source, self.relu_before_extra = extra, extra_source, bool(relu_before_extra)
        self.upsample, self.norm, self.impl = upsample, norm_spec(norm), impl

    def _conv(self, kernel_size, name, strides=1):
        return keras.layers.Conv2D(self.out_channels, kernel_size, strides=strides,
                                   padding="same" if strides == 1 else "valid", use_bias=self.norm is None,
                                   name=name)

    def _backbone_levels(self, features):
        levels = sorted(int(k) for k in features)
        used = [lvl for lvl in levels if self.min_level <= lvl <= self.max_level]
        if not used or used[0] != self.min_level or used != list(range(used[0], used[-1] + 1)):
            raise ValueError(f"FPN: needs contiguous input levels from min_level={self.min_level}, got {levels}.")
        return used

    def build(self, input_shape):
        shapes = {int(k): v for k, v in input_shape.items()}
        self.levels = self._backbone_levels(shapes)
        top = self.levels[-1]
        self.extra_levels = list(range(top + 1, self.max_level + 1)) if self.extra == "conv" else []
        # The levels with a lateral, an output conv and a place in the top-down path.
        self.merged_levels = (list(range(self.min_level, self.max_level + 1)) if self.extra == "carafe_lateral"
                              else self.levels)
        # Per-level sublayers in lists (ordered like self.merged_levels / self.extra_levels) so Keras tracks them.
        self.lateral_convs = [self._conv(1, f"lateral{lvl}") if lvl <= top else
                              self._conv(3, f"lateral{lvl}", strides=2) for lvl in self.merged_levels]
        self.output_convs = [self._conv(3, f"output{lvl}") for lvl in self.merged_levels]
        self.extra_convs = [self._conv(3, f"extra{lvl}", strides=2) for lvl in self.extra_levels]
        for conv, lvl in zip(self.lateral_convs, self.merged_levels):
            conv.build(shapes[lvl] if lvl <= top else (None, None, None, shapes[top][-1] if lvl == top + 1
                                                       else self.out_channels))
        for conv in self.output_convs:
            conv.build((None, None, None, self.out_channels))
        for conv, lvl in zip(self.extra_convs, self.extra_levels):
            from_input = lvl == top + 1 and self.extra_source == "input"
            conv.build((None, None, None, shapes[top][-1] if from_input else self.out_channels))
        names = [f"lateral{lvl}" for lvl in self.merged_levels] + [f"output{lvl}" for lvl in self.merged_levels] + \
                [f"extra{lvl}" for lvl in self.extra_levels]
        self.norms = [] if self.norm is None else [make_norm(self.norm, f"{n}_norm") for n in names]
        for layer in self.norms:
            layer.build((None, None, None, self.out_channels))
        self.upsamplers = []
        if self.upsample == "carafe":
            self.upsamplers = [make_upsampler("carafe", scale_factor=2, channels=self.out_channels, impl=self.impl,
                                              name=f"upsample{lvl}") for lvl in self.merged_levels[:-1]]
            for layer in self.upsamplers:
                layer.build((None, None, None, self.out_channels))
        super().build(input_shape)

    def _apply(self, conv, norm_index, x):
        x = conv(x)
        return x if self.norm is None else self.norms[norm_index](x)

    def _upsample_add(self, coarse, fine, index):
        """Upsamples `coarse` by 2, crops it to `fine`'s size (odd sizes) and adds."""
        if self.upsample == "carafe":
            up = self.upsamplers[index](coarse)
        else:
            up = tf.repeat(tf.repeat(coarse, 2, axis=1), 2, axis=2)
        size = tf.shape(fine)
        return fine + up[:, :size[1], :size[2], :]

    def call(self, features):
        features = {int(k): v for k, v in features.items()}
        n = len(self.merged_levels)
        top = self.levels[-1]
        merged = []
        for i, (conv, lvl) in enumerate(zip(self.lateral_convs, self.merged_levels)):
            if lvl <= top:
                source = features[lvl]
            else:  # an extra lateral (carafe_lateral): 3x3 stride 2, pad 1, on C_top, then on the previous one
                source = tf.pad(features[top] if lvl == top + 1 else merged[-1], [[0, 0], [1, 1], [1, 1], [0, 0]])
            merged.append(self._apply(conv, i, source))
        for i in reversed(range(n - 1)):
            merged[i] = self._upsample_add(merged[i + 1], merged[i], i)
        outputs = {lvl: self._apply(self.output_convs[i], n + i, merged[i])
                   for i, lvl in enumerate(self.merged_levels)}
        for level in range(self.merged_levels[-1] + 1, self.max_level + 1):
            if self.extra == "maxpool":
                outputs[level] = outputs[level - 1][:, ::2, ::2, :]
                continue
            if level == top + 1:
                source = features[top] if self.extra_source == "input" else outputs[top]
            else:
                source = tf.nn.relu(outputs[level - 1]) if self.relu_before_extra else outputs[level - 1]
            source = tf.pad(source, [[0, 0], [1, 1], [1, 1], [0, 0]])
            i = level - top - 1
            outputs[level] = self._apply(self.extra_convs[i], 2 * n + i, source)
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = {int(k): v for k, v in input_shape.items()}
        self._backbone_levels(shapes)
        result = {}
        for level in range(self.min_level, self.max_level + 1):
            if level in shapes:
                n, h, w = shapes[level][:3]
            else:
                h, w = [None if s is None else (s - 1) // 2 + 1 for s in (h, w)]
            result[level] = (n, h, w, self.out_channels)
        return result

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, min_level=self.min_level, max_level=self.max_level,
                      extra=self.extra, extra_source=self.extra_source, relu_before_extra=self.relu_before_extra,
                      upsample=self.upsample, norm=self.norm, impl=self.impl)
        return config
