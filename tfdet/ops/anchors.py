"""Multi-level anchors, exactly as mmdetection's (v2+) AnchorGenerator lays them out.

Per level with stride s and base size b (default b = s):
  h_ratio = sqrt(ratio), w_ratio = 1 / h_ratio
  w = b * w_ratio * scale, h = b * h_ratio * scale     (ratios outer, scales inner: "scale major")
  base anchor = (cx - w/2, cy - h/2, cx + w/2, cy + h/2) with (cx, cy) = center_offset * (b, b)
  anchors = base anchors shifted by (x * s, y * s) for every feature location, in row-major order
            (y outer, x inner), the base anchors of one location consecutive.
This is the order of an NHWC head output [B, H, W, A * k] reshaped to [B, H * W * A, k].

RPN (FPN): strides (4, 8, 16, 32, 64), scales (8,), ratios (0.5, 1, 2).
RetinaNet: strides (8, 16, 32, 64, 128), octave_base_scale 4, scales_per_octave 3 (scales
4 * 2^(0, 1/3, 2/3)), ratios (0.5, 1, 2).

torchvision's AnchorGenerator (models/detection/anchor_utils.py) has the same layout with three
differences, each an option here (defaults keep the mmdetection behaviour):
  sizes=((32,), (64,), ...)   absolute anchor sizes per level instead of base size x scales:
                              w = size * w_ratio, h = size * h_ratio (torchvision RetinaNet uses the integer
                              octave sizes int(s * 2^(i/3)): (32, 40, 50), (64, 80, 101), ...);
  round_base=True             base anchors rounded to whole pixels (half to even, torch.round);
  strides_from_image=True     the stride of a level is padded_image_size // feature_size per axis,
                              not the configured stride: an 800-pixel input gives P6 13 rows and a
                              vertical stride of 61, not 64 (pass image_size to __call__).
"""

import tensorflow as tf


def _pair(value):
    if isinstance(value, (int, float)):
        return float(value), float(value)
    value = tuple(float(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"a stride must be a number or a (stride_w, stride_h) pair, got {value!r}.")
    return value


class AnchorGenerator:
    """Anchor layout for a feature pyramid. Holds only configuration: no variables, no state.

    Args:
      strides: per level, a number or (stride_w, stride_h), in input pixels.
      ratios: height / width ratios.
      scales: anchor scales relative to the base size; or None with octave_base_scale and
        scales_per_octave, giving scales octave_base_scale * 2^(i / scales_per_octave).
      base_sizes: per level base size; defaults to min(stride) of each level.
      center_offset: anchor centre offset within a cell, in units of the base size (0: the cell's
        top-left corner, mmdetection's default).
      sizes: per level, absolute anchor sizes (torchvision): replaces scales / octave scales and
        base_sizes; every level must have the same number of sizes.
      round_base: round the base anchors to whole pixels (torchvision).
      strides_from_image: compute each level's stride as padded_image_size // feature_size per axis
        (torchvision); __call__ then needs image_size. `strides` still serve valid_flags.
    """

    def __init__(self, strides, ratios=(0.5, 1.0, 2.0), scales=None, base_sizes=None, octave_base_scale=None,
                 scales_per_octave=None, center_offset=0.0, sizes=None, round_base=False, strides_from_image=False):
        self.strides = [_pair(s) for s in strides]
        if not self.strides:
            raise ValueError("AnchorGenerator: strides must not be empty.")
        self.ratios = tuple(float(r) for r in ratios)
        self.round_base, self.strides_from_image = bool(round_base), bool(strides_from_image)
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"AnchorGenerator: center_offset must be in [0, 1], got {center_offset}.")
        self.center_offset = float(center_offset)
        if sizes is not None:
            if scales is not None or octave_base_scale is not None or base_sizes is not None:
                raise ValueError("AnchorGenerator: sizes replaces scales, octave_base_scale and base_sizes; give "
                                 "only sizes.")
            self.sizes = [tuple(float(v) for v in level) for level in sizes]
            if len(self.sizes) != len(self.strides) or len({len(level) for level in self.sizes}) != 1:
                raise ValueError(f"AnchorGenerator: sizes must give one equally long tuple per level "
                                 f"({len(self.strides)} levels), got {sizes!r}.")
            self.scales = self.base_sizes = None
            return
        self.sizes = None
        if (scales is None) == (octave_base_scale is None or scales_per_octave is None):
            raise ValueError("AnchorGenerator: give either scales, or octave_base_scale and scales_per_octave.")
        if scales is None:
            scales = [octave_base_scale * 2.0 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        self.scales = tuple(float(s) for s in scales)
        if base_sizes is None:
            base_sizes = [min(s) for s in self.strides]
        if len(base_sizes) != len(self.strides):
            raise ValueError(f"AnchorGenerator: {len(base_sizes)} base_sizes for {len(self.strides)} strides.")
        self.base_sizes = [float(b) for b in base_sizes]

    @property
    def num_levels(self):
        return len(self.strides)

    @property
    def num_anchors(self):
        """Anchors per feature location (the same on every level)."""
        return len(self.sizes[0] if self.sizes is not None else self.scales) * len(self.ratios)

    def base_anchors(self, level, dtype=tf.float32):
        """[A, 4] anchors of one location at the origin of `level` (0-based)."""
        h_ratios = tf.sqrt(tf.constant(self.ratios, dtype))
        w_ratios = 1.0 / h_ratios
        if self.sizes is not None:  # torchvision: w_ratio * size, in that order (bit-exact)
            sizes = tf.constant(self.sizes[level], dtype)
            ws = tf.reshape(w_ratios[:, None] * sizes[None, :], [-1])
            hs = tf.reshape(h_ratios[:, None] * sizes[None, :], [-1])
            center = tf.constant(0.0, dtype)
        else:
            size = tf.constant(self.base_sizes[level], dtype)
            center = self.center_offset * size
            scales = tf.constant(self.scales, dtype)
            ws = tf.reshape(size * w_ratios[:, None] * scales[None, :], [-1])
            hs = tf.reshape(size * h_ratios[:, None] * scales[None, :], [-1])
        anchors = tf.stack([center - 0.5 * ws, center - 0.5 * hs, center + 0.5 * ws, center + 0.5 * hs], axis=-1)
        return tf.round(anchors) if self.round_base else anchors  # tf.round: half to even, as torch.round

    def level_strides(self, level, feature_size, image_size=None):
        """(stride_w, stride_h) of `level`: the configured one, or with strides_from_image
        image_size // feature_size per axis (ints or int32 scalar tensors)."""
        if not self.strides_from_image:
            return self.strides[level]
        if image_size is None:
            raise ValueError("AnchorGenerator(strides_from_image=True) needs the padded image_size (height, width).")
        (image_h, image_w), (height, width) = image_size, feature_size
        return image_w // width, image_h // height

    def level_anchors(self, level, feature_size, dtype=tf.float32, image_size=None):
        """[H * W * A, 4] anchors of one level for a feature map of size (H, W) (ints or scalar tensors);
        image_size: the padded input (height, width), needed with strides_from_image."""
        height, width = feature_size
        stride_w, stride_h = (tf.cast(s, dtype) for s in self.level_strides(level, feature_size, image_size))
        shift_x = tf.range(tf.cast(width, dtype), dtype=dtype) * stride_w
        shift_y = tf.range(tf.cast(height, dtype), dtype=dtype) * stride_h
        yy, xx = tf.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W], x fastest when flattened
        shifts = tf.reshape(tf.stack([xx, yy, xx, yy], axis=-1), [-1, 1, 4])
        return tf.reshape(shifts + self.base_anchors(level, dtype)[None], [-1, 4])

    def __call__(self, feature_sizes, dtype=tf.float32, image_size=None):
        """Anchors of all levels, a list of [H_l * W_l * A, 4] tensors (concatenate for a flat layout).

        Args:
          feature_sizes: one (height, width) per level.
          image_size: (height, width) of the padded input; needed with strides_from_image.
        """
        self._check_levels(feature_sizes)
        return [self.level_anchors(level, size, dtype, image_size) for level, size in enumerate(feature_sizes)]

    def valid_flags(self, feature_sizes, valid_sizes):
        """Which anchors sit on a feature location inside the un-padded image (mmdetection valid_flags).

        Location (y, x) of a level with stride s is valid when y < ceil(valid_h / s_h) and
        x < ceil(valid_w / s_w); all anchors of a location share its flag.

        Args:
          feature_sizes: one (height, width) per level.
          valid_sizes: [B, 2] (height, width) of each image inside the padded batch.
        Returns:
          list of [B, H_l * W_l * A] bool, one per level.
        """
        self._check_levels(feature_sizes)
        valid_sizes = tf.cast(tf.convert_to_tensor(valid_sizes), tf.float32)
        flags = []
        for (height, width), (stride_w, stride_h) in zip(feature_sizes, self.strides):
            valid_h = tf.cast(tf.math.ceil(valid_sizes[:, 0] / stride_h), tf.int32)  # [B]
            valid_w = tf.cast(tf.math.ceil(valid_sizes[:, 1] / stride_w), tf.int32)
            rows = tf.range(height)[None, :, None] < valid_h[:, None, None]
            cols = tf.range(width)[None, None, :] < valid_w[:, None, None]
            loc = tf.logical_and(rows, cols)  # [B, H, W]
            loc = tf.repeat(loc[..., None], self.num_anchors, axis=-1)
            flags.append(tf.reshape(loc, [tf.shape(valid_sizes)[0], -1]))
        return flags

    def _check_levels(self, feature_sizes):
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"AnchorGenerator: {len(feature_sizes)} feature_sizes for {self.num_levels} levels.")


def anchors_inside(anchors, image_sizes, allowed_border=0.0):
    """Anchors within the image up to `allowed_border` pixels (mmdetection anchor_inside_flags).

    x1 >= -border, y1 >= -border, x2 < width + border, y2 < height + border; a negative
    `allowed_border` (mmdetection's default -1 for RPN and RetinaNet) keeps every anchor.

    Args:
      anchors: [N, 4] (shared by the batch) or [B, N, 4].
      image_sizes: [B, 2] (height, width).
    Returns:
      [B, N] bool.
    """
    anchors = tf.convert_to_tensor(anchors)
    sizes = tf.cast(tf.convert_to_tensor(image_sizes), anchors.dtype)
    if anchors.shape.rank == 2:
        anchors = anchors[None]
    shape = tf.stack([tf.shape(sizes)[0], tf.shape(anchors)[1]])
    if allowed_border < 0:
        return tf.ones(shape, tf.bool)
    border = tf.constant(allowed_border, anchors.dtype)
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    inside = ((anchors[..., 0] >= -border) & (anchors[..., 1] >= -border)
              & (anchors[..., 2] < width + border) & (anchors[..., 3] < height + border))
    return tf.broadcast_to(inside, shape)
