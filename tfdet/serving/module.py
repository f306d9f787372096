"""A detector wrapped for serving: preprocessing inside the graph, outputs in original-image pixels.

`ServingModule(model, ...)` is a tf.Module with one tf.function per input type:
  image_tensor   images          [B, H, W, 3] uint8 RGB (one size per batch; H, W fixed or dynamic)
  encoded_image  encoded_images  [B] string, JPEG / PNG / GIF / BMP bytes (any sizes; decoded to RGB)
Each image is resized keeping its aspect ratio to the model's (long, short) scale (the rule of
tfdet.data.augment.resize_to_scale: short edge `short` unless the long edge would exceed `long`; its
sizes rounded, or with size_rule="torchvision" floored as torchvision does), padded with zeros at the
bottom/right, run through the detector, and mapped back. The padding (`pad`):
  "square"  the square of max(scale) rounded up to `pad_to_multiple` (the padded size of
            tfdet.data.pipeline, so served images see exactly what evaluation sees; both input types give
            the same detections for the same pixels);
  "batch"   the batch's largest resized height and width, each rounded up to `pad_to_multiple`
            (torchvision's GeneralizedRCNNTransform.batch_images: with anchor strides from the padded
            size, an image's detections then depend on the batch it comes in, as in torchvision).
The outputs:
  num_detections      [B] int32
  detection_boxes     [B, D, 4] float32  (x1, y1, x2, y2) original-image pixels, clipped to the image
  detection_scores    [B, D] float32
  detection_classes   [B, D] int32       dataset category ids (a constant lookup), -1 = padding
  detection_masks     [B, D, M, M] float32 box-relative probabilities (mask_output="box"), or
                      [B, D, H, W] uint8 0/1 full-image masks (mask_output="image"; H, W = the largest
                      original size in the batch, each image's mask at its top-left)   (Mask R-CNN)
  detection_keypoints [B, D, K, 3] float32 (x, y, score), continuous original-image pixels (Keypoint R-CNN)
  image_size          [B, 2] int32       original (height, width) of each image
  image_status        [B] int32          0 = detected; 1 = the encoded image could not be decoded (its
                                         rows are empty and its image_size is (0, 0))
Padded rows (index >= num_detections) are zero (classes -1).

Bad requests: one encoded image that does not decode does not fail the batch (it gets status 1; the
others are detected), an empty batch gets empty outputs, and an image tensor that is not
[B, H, W, 3] RGB fails at once with a message saying so.
"""

import tensorflow as tf

from tfdet.data.augment import SIZE_RULES, keep_ratio_size
from tfdet.modeling.roi_heads import paste_masks

INPUT_TYPES = ("image_tensor", "encoded_image")
MASK_OUTPUTS = ("box", "image")
PADS = ("square", "batch")


def _round_up(value, multiple):
    return (value + multiple - 1) // multiple * multiple


def resize_ratio(height, width, scale, rule="round"):
    """The keep-ratio resize of an image of `height` x `width` (tensors) to `scale` (long, short), as
    tfdet.data.augment.resize_keep_ratio with size rule `rule`: (new_h, new_w) int32 and (sy, sx) float32
    exact ratios."""
    new_h, new_w = keep_ratio_size(height, width, min(scale), max(scale), rule)
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return new_h, new_w, tf.cast(new_h, tf.float32) / hf, tf.cast(new_w, tf.float32) / wf


class _ModelHolder:
    """A plain (untracked) reference to the Keras model."""

    def __init__(self, model):
        self.model = model


class ServingModule(tf.Module):
    """Serving wrapper of a built detector (see the module docstring).

    Args:
      model: a built tfdet detector (its `detect(images, image_sizes)` is traced).
      scale: (long, short) test scale, e.g. the config's data.scale.
      category_ids: [C] dataset category id of each contiguous class (default 1..C).
      mask_output: "box" or "image" (see the module docstring).
      input_size: None (dynamic H, W) or (H, W) fixed for the image_tensor signature.
      pad_to_multiple: the padded sides are multiples of this (the FPN's largest stride).
      size_rule: "round" (tfdet's) or "torchvision" (tfdet.data.augment.keep_ratio_size), e.g. the
        config's data.size_rule.
      pad: "square" or "batch" (see the module docstring), e.g. the config's data.serving_pad.
    """

    def __init__(self, model, scale, category_ids=None, mask_output="box", input_size=None, pad_to_multiple=32,
                 size_rule="round", pad="square"):
        super().__init__(name="tfdet_serving")
        if mask_output not in MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {mask_output!r}.")
        if size_rule not in SIZE_RULES:
            raise ValueError(f"size_rule must be one of {SIZE_RULES} (config.data.size_rule), got {size_rule!r}.")
        if pad not in PADS:
            raise ValueError(f"pad must be one of {PADS} (config.data.serving_pad), got {pad!r}.")
        num_classes = int(model.num_classes)
        category_ids = list(range(1, num_classes + 1)) if category_ids is None else [int(c) for c in category_ids]
        if len(category_ids) != num_classes:
            raise ValueError(f"category_ids has {len(category_ids)} ids but the model has {num_classes} classes.")
        if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
            raise ValueError(f"input_size must be None or (height, width) >= 1, got {input_size!r}.")
        # The Keras model stays out of the SavedModel's object graph (Keras would trace its own serving
        # signature with unknown shapes); its variables are tracked directly, which is all the graph needs.
        self._holder = _ModelHolder(model)
        self.model_variables = list(model.variables)
        self.scale = (max(scale), min(scale))
        self.mask_output = mask_output
        mask_block = getattr(model, "model_config", {}).get("mask") or {}
        self.mask_paste = mask_block.get("paste", "detectron2")  # model.mask.paste
        self.size_rule, self.pad, self.pad_to_multiple = size_rule, pad, int(pad_to_multiple)
        self.padded_side = _round_up(max(self.scale), self.pad_to_multiple)
        self.category_ids = tf.constant(category_ids, tf.int32)
        h, w = (None, None) if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.image_tensor = tf.function(
            self._from_tensor, input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8, name="images")])
        self.encoded_image = tf.function(
            self._from_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")])

    def signatures(self, input_types=INPUT_TYPES):
        """{signature name: concrete function}; "serving_default" is the first of `input_types`."""
        unknown = [t for t in input_types if t not in INPUT_TYPES]
        if not input_types or unknown:
            raise ValueError(f"input_types must be a non-empty subset of {INPUT_TYPES}, got {list(input_types)}.")
        fns = {t: getattr(self, t).get_concrete_function() for t in input_types}
        return {"serving_default": fns[input_types[0]], **fns}

    # -- input types -----------------------------------------------------------------------------------
    def _from_tensor(self, images):
        shape = tf.shape(images)
        # A signature's shape is not enforced on a call (TF Serving, loaded SavedModels): check the channels.
        check = tf.debugging.Assert(tf.reduce_all(tf.equal(shape[-1:], 3)), [
            "image_tensor: images must be uint8 [batch, height, width, 3] RGB; got shape", shape], summarize=8)
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        new_h, new_w, sy, sx = resize_ratio(shape[1], shape[2], self.scale, self.size_rule)
        resized = tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
        padded = self._pad_batch(resized, tf.stack([new_h, new_w])[None])
        batch = shape[0]
        original = tf.tile(shape[None, 1:3], [batch, 1])
        valid = tf.tile(tf.stack([new_h, new_w])[None], [batch, 1])
        scales = tf.tile(tf.stack([sy, sx])[None], [batch, 1])
        result = self._detect_any(padded, original, scales, valid)
        result["image_status"] = tf.zeros([batch], tf.int32)
        return result

    def _from_bytes(self, encoded_images):
        side, square = self.padded_side, self.pad == "square"
        count = tf.shape(encoded_images)[0]

        def prepare(index, data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            size = tf.shape(image)[:2]
            new_h, new_w, sy, sx = resize_ratio(size[0], size[1], self.scale, self.size_rule)
            resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
            if square:
                resized = tf.ensure_shape(tf.pad(resized, [[0, side - new_h], [0, side - new_w], [0, 0]]),
                                          [side, side, 3])
            return index, resized, size, tf.stack([sy, sx]), tf.stack([new_h, new_w])

        # tf.data drops the images whose decoding fails (graph ops have no per-element try); the indices
        # of those that remain say which ones ran. The empty batch after them makes the result a batch
        # even when none remains. "batch" padding: padded_batch pads to the largest, _pad_batch rounds up.
        decoded = tf.data.Dataset.from_tensor_slices((tf.range(count), encoded_images)).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
        empty = (tf.zeros([0], tf.int32), tf.zeros([0, side, side, 3] if square else [0, 0, 0, 3]),
                 tf.zeros([0, 2], tf.int32), tf.zeros([0, 2]), tf.zeros([0, 2], tf.int32))
        size = tf.cast(tf.maximum(count, 1), tf.int64)
        batched = decoded.batch(size) if square else decoded.padded_batch(size)
        ran, padded, original, scales, valid = batched.concatenate(
            tf.data.Dataset.from_tensors(empty)).take(1).get_single_element()
        padded = self._pad_batch(padded, valid)
        result = self._detect_any(padded, original, scales, valid)
        # Row i of the request takes row position[i] of the results; a failed image the empty row after them.
        done = tf.shape(ran)[0]
        position = tf.tensor_scatter_nd_update(tf.fill([count], done), ran[:, None], tf.range(done))
        result = {k: tf.gather(tf.concat([v, _empty_row(v, -1 if k == "detection_classes" else 0)], 0), position)
                  for k, v in result.items()}
        result["image_status"] = tf.tensor_scatter_nd_update(tf.ones([count], tf.int32), ran[:, None],
                                                             tf.zeros_like(ran))
        return result

    # -- shared ----------------------------------------------------------------------------------------
    def _pad_batch(self, images, valid):
        """images [B, h, w, 3] (each image at the top-left, already padded to the batch's largest) zero-padded
        at the bottom/right to the padded size of `self.pad`; valid [B, 2] the resized (h, w)."""
        if self.pad == "square":
            side = self.padded_side
            padded = tf.pad(images, [[0, 0], [0, side - tf.shape(images)[1]], [0, side - tf.shape(images)[2]], [0, 0]])
            return tf.ensure_shape(padded, [None, side, side, 3])
        # at least one multiple (an empty batch runs one blank image of that size)
        target = _round_up(tf.reduce_max(tf.concat([valid, tf.ones([1, 2], tf.int32)], 0), 0), self.pad_to_multiple)
        shape = tf.shape(images)
        return tf.pad(images, [[0, 0], [0, target[0] - shape[1]], [0, target[1] - shape[2]], [0, 0]])

    def _detect_any(self, images, original, scales, valid):
        """`_detect` for any batch size: an empty batch runs one blank image whose outputs are dropped
        (the detectors' shapes need at least one image)."""
        count = tf.shape(images)[0]
        blank = tf.maximum(1 - count, 0)
        ones = tf.ones([blank, 2], tf.int32)
        out = self._detect(tf.concat([images, tf.zeros(tf.concat([[blank], tf.shape(images)[1:]], 0))], 0),
                           tf.concat([original, ones], 0), tf.concat([scales, tf.ones([blank, 2])], 0),
                           tf.concat([valid, ones], 0))
        return {k: v[:count] for k, v in out.items()}

    def _detect(self, images, original, scales, valid):
        """images [B, P, P', 3] float32; original / valid [B, 2] int32 (h, w); scales [B, 2] (sy, sx)."""
        out = self._holder.model.detect(images, tf.cast(valid, tf.float32))
        classes = tf.cast(out["detection_classes"], tf.int32)
        keep = classes >= 0
        sy, sx = scales[:, 0, None], scales[:, 1, None]  # [B, 1]
        orig = tf.cast(original, tf.float32)
        x1, y1, x2, y2 = tf.unstack(out["detection_boxes"], 4, axis=-1)
        limit_w, limit_h = orig[:, 1, None], orig[:, 0, None]
        boxes = tf.stack([tf.clip_by_value(x1 / sx, 0.0, limit_w), tf.clip_by_value(y1 / sy, 0.0, limit_h),
                          tf.clip_by_value(x2 / sx, 0.0, limit_w), tf.clip_by_value(y2 / sy, 0.0, limit_h)], -1)
        boxes = tf.where(keep[..., None], boxes, 0.0)
        result = {
            "num_detections": tf.cast(out["num_detections"], tf.int32),
            "detection_boxes": boxes,
            "detection_scores": tf.where(keep, out["detection_scores"], 0.0),
            "detection_classes": tf.where(keep, tf.gather(self.category_ids, tf.maximum(classes, 0)), -1),
            "image_size": tf.cast(original, tf.int32),
        }
        if "detection_masks" in out:
            masks = tf.where(keep[..., None, None], out["detection_masks"], 0.0)
            if self.mask_output == "image":
                size = tf.reduce_max(original, axis=0)
                masks = paste_masks(masks, boxes, (size[0], size[1]), rule=self.mask_paste)
            result["detection_masks"] = masks
        if "detection_keypoints" in out:
            kx, ky, ks = tf.unstack(out["detection_keypoints"], 3, axis=-1)
            points = tf.stack([kx / sx[..., None], ky / sy[..., None], ks], -1)
            result["detection_keypoints"] = tf.where(keep[..., None, None], points, 0.0)
        return result


def _empty_row(value, fill):
    """One row like the rows of `value` [N, ...], filled with `fill`."""
    return tf.fill(tf.concat([[1], tf.shape(value)[1:]], 0), tf.cast(fill, value.dtype))
