"""Deformable RoI pooling layers: DeformRoIPool and ModulatedDeformRoIPoolPack (mmcv's "pack" variants:
offsets, and for the modulated one a mask, come from fully-connected layers on the plainly pooled
features)."""

import keras
import tensorflow as tf

from tfdet.ops._inputs import flat_boxes
from tfdet.ops.deform_roi_pool import deform_roi_pool


@keras.saving.register_keras_serializable(package="tfdet")
class DeformRoIPool(keras.layers.Layer):
    """Deformable RoI pooling (Dai et al. 2017) with learned offsets.

    Each box is pooled once without offsets; three fully-connected layers (deform_fc_channels,
    deform_fc_channels, then 2 per bin, the last zero-initialized so that the layer starts as aligned
    RoIAlign) predict per-bin offsets (x, y) in units of the box size (scaled by gamma), and the box is
    pooled again with them.

    Call with:
      features: [B, H, W, C] one feature map (stride 1 / spatial_scale).
      boxes: [B, K, 4] (x1, y1, x2, y2) in input pixels, padded to K boxes per image.
    Returns [B, K, output_size[0], output_size[1], C].
    """

    modulated = False

    def __init__(self, output_size=7, spatial_scale=1.0, sampling_ratio=0, gamma=0.1, deform_fc_channels=1024,
                 impl=None, **kwargs):
        super().__init__(**kwargs)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale, self.sampling_ratio = float(spatial_scale), int(sampling_ratio)
        self.gamma, self.deform_fc_channels, self.impl = float(gamma), int(deform_fc_channels), impl
        bins = self.output_size[0] * self.output_size[1]
        self.offset_fc = [keras.layers.Dense(self.deform_fc_channels, activation="relu", name="offset_fc1"),
                          keras.layers.Dense(self.deform_fc_channels, activation="relu", name="offset_fc2"),
                          keras.layers.Dense(2 * bins, kernel_initializer="zeros", name="offset_fc3")]
        if self.modulated:
            self.mask_fc = [keras.layers.Dense(self.deform_fc_channels, activation="relu", name="mask_fc1"),
                            keras.layers.Dense(bins, activation="sigmoid", kernel_initializer="zeros",
                                               name="mask_fc2")]

    def build(self, features_shape, boxes_shape):
        flat = self.output_size[0] * self.output_size[1] * features_shape[-1]
        for branch in [self.offset_fc] + ([self.mask_fc] if self.modulated else []):
            width = flat
            for dense in branch:
                dense.build((None, width))
                width = dense.units

    def _pool(self, features, boxes, images, offsets):
        return deform_roi_pool(features, boxes, images, offsets, self.output_size, self.spatial_scale,
                               self.sampling_ratio, self.gamma, impl=self.impl)

    def call(self, features, boxes):
        rois, images, batch, num_boxes = flat_boxes(boxes, type(self).__name__)
        plain = self._pool(features, rois, images, None)
        channels = features.shape[-1]
        pooled_flat = tf.reshape(plain, [-1, self.output_size[0] * self.output_size[1] * channels])
        offsets = pooled_flat
        for dense in self.offset_fc:
            offsets = dense(offsets)
        offsets = tf.reshape(offsets, [-1, *self.output_size, 2])
        out = self._pool(features, rois, images, offsets)
        if self.modulated:
            mask = pooled_flat
            for dense in self.mask_fc:
                mask = dense(mask)
            out *= tf.reshape(mask, [-1, *self.output_size, 1])
        return tf.reshape(out, [batch, num_boxes, *self.output_size, channels])

    def compute_output_shape(self, features_shape, boxes_shape):
        return (boxes_shape[0], boxes_shape[1], *self.output_size, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(output_size=list(self.output_size), spatial_scale=self.spatial_scale,
                      sampling_ratio=self.sampling_ratio, gamma=self.gamma,
                      deform_fc_channels=self.deform_fc_channels, impl=self.impl)
        return config


@keras.saving.register_keras_serializable(package="tfdet")
class ModulatedDeformRoIPoolPack(DeformRoIPool):
    """Modulated deformable RoI pooling (DCN v2): DeformRoIPool whose bins are also scaled by a mask
    from two fully-connected layers (deform_fc_channels, then 1 per bin through a sigmoid, the last
    zero-initialized so that the layer starts as 0.5 x aligned RoIAlign)."""

    modulated = True
