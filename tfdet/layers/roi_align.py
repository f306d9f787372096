"""MultiLevelRoIAlign: pools each box from the FPN level that matches its size."""

import keras
import tensorflow as tf

from tfdet.ops._inputs import flat_boxes
from tfdet.ops.roi_align import fpn_levels, roi_align


@keras.saving.register_keras_serializable(package="tfdet")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoIAlign over a feature pyramid.

    Level `l` has stride 2**l. Each box is pooled from level
    clamp(floor(canonical_level + log2(sqrt(area) / canonical_size)), min_level, max_level).

    Call with:
      features: dict {level: [B, H_l, W_l, C]} or a list of levels min_level..max_level.
      boxes: [B, K, 4] (x1, y1, x2, y2) in input pixels, padded to K boxes per image.
    Returns [B, K, output_size[0], output_size[1], C].
    """

    def __init__(self, output_size=7, min_level=2, max_level=5, canonical_level=4, canonical_size=224.0,
                 sampling_ratio=0, aligned=True, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if min_level > max_level:
            raise ValueError(f"MultiLevelRoIAlign: min_level {min_level} > max_level {max_level}.")
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.canonical_level, self.canonical_size = int(canonical_level), float(canonical_size)
        self.sampling_ratio, self.aligned, self.impl = int(sampling_ratio), bool(aligned), impl

    def _levels(self, features):
        levels = list(range(self.min_level, self.max_level + 1))
        if isinstance(features, dict):
            features = {int(k): v for k, v in features.items()}  # keys may be "2" after serialization
            absent = [lvl for lvl in levels if lvl not in features]
            if absent:
                raise ValueError(f"MultiLevelRoIAlign: features lack levels {absent}; "
                                 f"got {sorted(features)} for min_level={self.min_level}, max_level={self.max_level}.")
            return [features[lvl] for lvl in levels]
        features = list(features)
        if len(features) != len(levels):
            raise ValueError(f"MultiLevelRoIAlign: expected {len(levels)} feature maps (levels {levels}), "
                             f"got {len(features)}.")
        return features

    def call(self, features, boxes):
        maps = self._levels(features)
        flat, images, batch, num_boxes = flat_boxes(boxes, "MultiLevelRoIAlign")
        level = fpn_levels(flat, self.min_level, self.max_level, self.canonical_level, self.canonical_size)
        partition = level - self.min_level
        positions = tf.dynamic_partition(tf.range(tf.shape(flat)[0]), partition, len(maps))
        pooled = []
        for i, feature in enumerate(maps):
            pooled.append(roi_align(
                feature, tf.gather(flat, positions[i]), tf.gather(images, positions[i]), self.output_size,
                spatial_scale=2.0 ** -(self.min_level + i), sampling_ratio=self.sampling_ratio,
                aligned=self.aligned, impl=self.impl))
        out = tf.dynamic_stitch(positions, pooled)
        channels = maps[0].shape[-1]
        return tf.reshape(out, [batch, num_boxes, *self.output_size, channels if channels is not None else -1])

    def compute_output_shape(self, features_shape, boxes_shape):
        first = features_shape[min(features_shape)] if isinstance(features_shape, dict) else features_shape[0]
        return (boxes_shape[0], boxes_shape[1], *self.output_size, first[-1])

    def get_config(self):
        config = super().get_config()
        config.update(output_size=list(self.output_size), min_level=self.min_level, max_level=self.max_level,
                      canonical_level=self.canonical_level, canonical_size=self.canonical_size,
                      sampling_ratio=self.sampling_ratio, aligned=self.aligned, impl=self.impl)
        return config
