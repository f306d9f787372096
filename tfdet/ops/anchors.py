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
    """

    def __init__(self, strides, ratios=(0.5, 1.0, 2.0), scales=None, base_sizes=None, octave_base_scale=None,
                 scales_per_octave=None, center_offset=0.0):
        self.strides = [_pair(s) for s in strides]
        if not self.strides:
            raise ValueError("AnchorGenerator: strides must not be empty.")
        if (scales is None) == (octave_base_scale is None or scales_per_octave is None):
            raise ValueError("AnchorGenerator: give either scales, or octave_base_scale and scales_per_octave.")
        if scales is None:
            scales = [octave_base_scale * 2.0 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        if base_sizes is None:
            base_sizes = [min(s) for s in self.strides]
        if len(base_sizes) != len(self.strides):
            raise ValueError(f"AnchorGenerator: {len(base_sizes)} base_sizes for {len(self.strides)} strides.")
        self.base_sizes = [float(b) for b in base_sizes]
        if not 0.0 <= center_offset <= 1.0:
            raise ValueError(f"AnchorGenerator: center_offset must be in [0, 1], got {center_offset}.")
        self.center_offset = float(center_offset)

    @property
    def num_levels(self):
        return len(self.strides)

    @property
    def num_anchors(self):
        """Anchors per feature location (the same on every level)."""
        return len(self.scales) * len(self.ratios)

    def base_anchors(self, level, dtype=tf.float32):
        """[A, 4] anchors of one location at the origin of `level` (0-based)."""
        size = tf.constant(self.base_sizes[level], dtype)
        center = self.center_offset * size
        h_ratios = tf.sqrt(tf.constant(self.ratios, dtype))
        w_ratios = 1.0 / h_ratios
        scales = tf.constant(self.scales, dtype)
        ws = tf.reshape(size * w_ratios[:, None] * scales[None, :], [-1])
        hs = tf.reshape(size * h_ratios[:, None] * scales[None, :], [-1])
        return tf.stack([center - 0.5 * ws, center - 0.5 * hs, center + 0.5 * ws, center + 0.5 * hs], axis=-1)

    def level_anchors(self, level, feature_size, dtype=tf.float32):
        """[H * W * A, 4] anchors of one level for a feature map of size (H, W) (ints or scalar tensors)."""
        height, width = feature_size
        stride_w, stride_h = self.strides[level]
        shift_x = tf.range(tf.cast(width, dtype), dtype=dtype) * stride_w
        shift_y = tf.range(tf.cast(height, dtype), dtype=dtype) * stride_h
        yy, xx = tf.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W], x fastest when flattened
        shifts = tf.reshape(tf.stack([xx, yy, xx, yy], axis=-1), [-1, 1, 4])
        return tf.reshape(shifts + self.base_anchors(level, dtype)[None], [-1, 4])

    def __call__(self, feature_sizes, dtype=tf.float32):
        """Anchors of all levels, a list of [H_l * W_l * A, 4] tensors (concatenate for a flat layout).

        Args:
          feature_sizes: one (height, width) per level.
        """
        self._check_levels(feature_sizes)
        return [self.level_anchors(level, size, dtype) for level, size in enumerate(feature_sizes)]

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
