"""Mask R-CNN mask head (FCN), mask targets, mask inference and pasting masks into the image.

Head (mmdetection FCNMaskHead): 4 x (3x3 conv 256 [+ norm] + ReLU) on 14x14 RoIAlign features, a 2x upsampling
(2x2 stride-2 deconv + ReLU, or CARAFE + ReLU) to 28x28, and a 1x1 conv giving one logit map per class
(or one, class-agnostic). The loss is per-pixel sigmoid BCE on the channel of the RoI's class.

Targets (mmdetection BitmapMasks.crop_and_resize): the gt bitmap of each positive RoI's matched gt
(full-image, or cropped to the gt box as tfdet.data.pipeline provides) is RoIAligned (aligned=True,
adaptive sampling) at the RoI box to 28x28 and thresholded at 0.5.

Pasting (detectron2 paste_masks_in_image, its convention documented at `paste_masks`).
"""

import keras
import tensorflow as tf

from tfdet import losses
from tfdet.layers.carafe import make_upsampler
from tfdet.modeling.conv_norm import build_conv_stack, conv_stack, norm_spec, run_conv_stack
from tfdet.ops import postprocess
from tfdet.ops.roi_align import roi_align

UPSAMPLE_KINDS = ("deconv", "carafe")


def _upsampler(kind, channels, impl):
    if kind == "deconv":
        return keras.layers.Conv2DTranspose(channels, 2, strides=2, name="upsample",
                                            kernel_initializer=keras.initializers.HeNormal())
    return make_upsampler("carafe", scale_factor=2, channels=channels, impl=impl, name="upsample")


@keras.saving.register_keras_serializable(package="tfdet")
class MaskHead(keras.layers.Layer):
    """Call on RoI features [B, K, S, S, C_in]; returns mask logits [B, K, 2S, 2S, num_classes]
    ([..., 1] when class_agnostic). `impl`: the CARAFE op's implementation (None | "fused" | "composite")."""

    def __init__(self, num_classes, num_convs=4, channels=256, upsample="deconv", class_agnostic=False, impl=None,
                 norm=None, **kwargs):
        super().__init__(**kwargs)
        if upsample not in UPSAMPLE_KINDS:
            raise ValueError(f"MaskHead: upsample must be one of {UPSAMPLE_KINDS}, got {upsample!r}.")
        self.num_classes, self.num_convs, self.channels = int(num_classes), int(num_convs), int(channels)
        self.upsample, self.class_agnostic, self.impl = upsample, bool(class_agnostic), impl
        self.norm = norm_spec(norm)
        init = keras.initializers.HeNormal()
        self.convs, self.norms = conv_stack(self.num_convs, self.channels, self.norm)
        self.upsampler = _upsampler(upsample, self.channels, impl)
        self.logits = keras.layers.Conv2D(1 if self.class_agnostic else self.num_classes, 1, name="logits",
                                          kernel_initializer=init)

    def build(self, input_shape):
        shape = build_conv_stack(self.convs, self.norms, (None, *input_shape[2:]))
        self.upsampler.build(shape)
        self.logits.build((None, None, None, self.channels))
        super().build(input_shape)

    def call(self, roi_features):
        shape = tf.shape(roi_features)
        x = tf.reshape(roi_features, [shape[0] * shape[1], *roi_features.shape[2:]])
        x = run_conv_stack(x, self.convs, self.norms)
        x = tf.nn.relu(self.upsampler(x))
        x = self.logits(x)
        return tf.reshape(x, [shape[0], shape[1], *x.shape[1:]])

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_convs=self.num_convs, channels=self.channels,
                      upsample=self.upsample, class_agnostic=self.class_agnostic, impl=self.impl, norm=self.norm)
        return config


def mask_targets(gt_masks, rois, matched_gt, resolution=28, threshold=0.5, gt_boxes=None, impl=None):
    """Binary mask targets [B, K, resolution, resolution] float32 (zeros where matched_gt < 0).

    Args:
      gt_masks: [B, G, H, W] (uint8 0/1 or float) of the padded gt: full-image bitmaps when gt_boxes is
        None, else masks cropped to their gt box (tfdet.data.pipeline's layout: mask g spans gt_boxes[g]).
      rois: [B, K, 4] sampled boxes in image pixels; matched_gt: [B, K] int gt index (-1: none).
      gt_boxes: [B, G, 4], for box-cropped masks: each RoI is mapped into its gt's crop,
        x' = (x - gx1) * S_w / (gx2 - gx1), and RoIAligned there. Parts of the RoI outside the gt box
        read zero (more than one crop pixel out) or the crop's border value (within one crop pixel,
        RoIAlign's edge clamp) -- where a full-image bitmap would have the object's pixels outside
        its box, which cannot happen for a tight box.
      impl: RoIAlign implementation (None, "fused", "composite").
    Costs one float32 copy of gt_masks (the RoIAlign input).
    """
    gt_masks = tf.convert_to_tensor(gt_masks)
    if gt_masks.shape.rank != 4:
        raise ValueError(f"mask_targets: gt_masks must be [B, G, H, W], got shape {gt_masks.shape}.")
    shape = tf.shape(gt_masks)
    batch, num_gt = shape[0], shape[1]
    num_rois = tf.shape(rois)[1]
    if gt_masks.shape[1] == 0:
        return tf.zeros([batch, num_rois, resolution, resolution], tf.float32)
    rois = tf.cast(rois, tf.float32)
    matched = tf.maximum(tf.cast(matched_gt, tf.int32), 0)
    if gt_boxes is not None:
        boxes = tf.gather(tf.cast(gt_boxes, tf.float32), matched, batch_dims=1)  # [B, K, 4]
        crop_size = tf.cast(tf.stack([shape[3], shape[2], shape[3], shape[2]]), tf.float32)  # (w, h, w, h)
        extent = tf.maximum(tf.concat([boxes[..., 2:] - boxes[..., :2]] * 2, axis=-1), 1e-6)
        rois = (rois - tf.concat([boxes[..., :2]] * 2, axis=-1)) * crop_size / extent
    # RoIs without a gt (and padding) pool an empty box: no sampling grid blown up by a zero-size gt.
    rois = tf.where((matched_gt >= 0)[..., None], rois, 0.0)
    bitmaps = tf.reshape(tf.cast(gt_masks, tf.float32), [batch * num_gt, shape[2], shape[3], 1])
    index = tf.range(batch)[:, None] * num_gt + matched
    crops = roi_align(bitmaps, tf.reshape(rois, [-1, 4]), tf.reshape(index, [-1]), resolution,
                      spatial_scale=1.0, sampling_ratio=0, aligned=True, impl=impl)
    crops = tf.reshape(crops, [batch, num_rois, resolution, resolution])
    targets = tf.cast(crops >= threshold, tf.float32)
    return tf.stop_gradient(tf.where((matched_gt >= 0)[..., None, None], targets, 0.0))


def mask_loss(mask_logits, targets, labels, weights):
    """Per-pixel BCE on each RoI's class channel, mean over the pixels of RoIs with weight > 0.

    Args: mask_logits [B, K, M, M, C]; targets [B, K, M, M]; labels [B, K] class; weights [B, K].
    """
    shape = tf.shape(mask_logits)
    logits = tf.reshape(mask_logits, [shape[0] * shape[1], shape[2], shape[3], shape[4]])
    return losses.mask_cross_entropy(logits, tf.reshape(targets, [-1, shape[2], shape[3]]), tf.reshape(labels, [-1]),
                                     tf.reshape(weights, [-1]))


def mask_probabilities(mask_logits, classes):
    """[B, K, M, M, C] logits and [B, K] classes (-1 padding) -> [B, K, M, M] probabilities of each
    detection's class (zeros for padding)."""
    logits = tf.cast(mask_logits, tf.float32)
    if logits.shape[-1] == 1:
        chosen = logits[..., 0]
    else:
        index = tf.maximum(tf.cast(classes, tf.int32), 0)
        chosen = tf.gather(tf.transpose(logits, [0, 1, 4, 2, 3]), index, batch_dims=2)
    return tf.where((classes >= 0)[..., None, None], tf.sigmoid(chosen), 0.0)


def _axis_weights(low, high, size, mask_size):
    """[..., size, mask_size] bilinear weights of image pixels 0..size-1 along one axis for boxes
    [low, high): pixel centre p + 0.5 reads mask coordinate u = (p + 0.5 - low) / (high - low) * m - 0.5
    (mask pixel centres at integer u); taps outside 0..m-1 read zero."""
    centres = tf.range(size, dtype=tf.float32) + 0.5
    extent = tf.maximum(high - low, 1e-6)
    u = (centres - low[..., None]) / extent[..., None] * mask_size - 0.5  # [..., size]
    floor = tf.floor(u)
    frac = u - floor
    floor = tf.cast(floor, tf.int32)
    # tf.one_hot gives an all-zero row for indices outside [0, depth): zero padding for free.
    return (tf.one_hot(floor, mask_size) * (1.0 - frac)[..., None]
            + tf.one_hot(floor + 1, mask_size) * frac[..., None])


PASTE_RULES = ("detectron2", "torchvision")


def paste_masks(masks, boxes, image_size, threshold=0.5, rule="detectron2"):
    """Pastes box-relative masks into full images (detectron2 paste_masks_in_image convention; with
    rule="torchvision", tfdet.ops.postprocess.paste_masks_torchvision, whose foreground is > threshold).

    Each mask [M, M] covers its box (x1, y1, x2, y2) exactly. Image pixel (i, j) has its centre at
    (j + 0.5, i + 0.5) and takes the bilinear sample of the mask at
    u = (j + 0.5 - x1) / (x2 - x1) * M - 0.5,  v = (i + 0.5 - y1) / (y2 - y1) * M - 0.5
    (mask pixel centres at integer u, v; grid_sample with align_corners=False and zero padding), so a
    pixel is foreground when that sample is >= threshold. Bilinear sampling with zero padding is
    separable, so each mask is pasted as W_y @ mask @ W_x^T with [H, M] and [W, M] weight matrices.

    Args:
      masks: [B, K, M, M] probabilities. boxes: [B, K, 4] in image pixels.
      image_size: (height, width), ints or scalar tensors.
      threshold: a float, or None to return the soft pasted probabilities.
    Returns:
      [B, K, height, width] uint8 0/1 (float32 probabilities when threshold is None).
    """
    if rule not in PASTE_RULES:
        raise ValueError(f"paste_masks: rule must be one of {PASTE_RULES} (model.mask.paste), got {rule!r}.")
    if rule == "torchvision":
        return postprocess.paste_masks_torchvision(masks, boxes, image_size, threshold=threshold)
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    if masks.shape.rank != 4 or boxes.shape.rank != 3:
        raise ValueError(f"paste_masks: masks must be [B, K, M, M] and boxes [B, K, 4], got {masks.shape}, "
                         f"{boxes.shape}.")
    height, width = image_size
    mask_size = masks.shape[-1]
    weights_y = _axis_weights(boxes[..., 1], boxes[..., 3], height, mask_size)  # [B, K, H, M]
    weights_x = _axis_weights(boxes[..., 0], boxes[..., 2], width, mask_size)  # [B, K, W, M]
    pasted = tf.einsum("nkic,nkjc->nkij", tf.einsum("nkia,nkac->nkic", weights_y, masks), weights_x)
    if threshold is None:
        return pasted
    return tf.cast(pasted >= threshold, tf.uint8)
