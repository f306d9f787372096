"""Augmentation: pure TF functions from an example dict to an example dict (one image, unbatched).

Keys (all optional except `image`; functions transform whatever is present, so they compose):
  image        [H, W, 3] uint8 or float32, RGB
  boxes        [N, 4] float32 (x1, y1, x2, y2) in pixels of `image`
  masks        [N, H, W] uint8 0/1, full-image instance masks
  box_masks    [N, Hm, Wm] uint8 0/1, instance masks cropped to their box (see `crop_masks_to_boxes`)
  keypoints    [N, K, 3] float32 (x, y, v), continuous pixel coordinates; v = 0 points are (0, 0)
  semantic     [H, W] uint8 class map, 255 = ignore
  scale        [2] float32 (sy, sx), network-input pixels per original pixel (set by the resizes)
  valid_size   [2] int32 (h, w) of the image content before padding (set by resizes and pads)
Other keys (classes, is_crowd, ids) pass through untouched.

Coordinates are continuous (pixel i covers [i, i + 1]): a flip maps x to W - x exactly (x1' = W - x2),
a resize by s maps x to s * x. Random functions take a `seed` of shape [2] (stateless RNG), so a
pipeline is reproducible whatever its parallelism.
"""

import tensorflow as tf


def _size(image):
    shape = tf.shape(image)
    return shape[0], shape[1]


def flip_left_right(example, flip_map=None):
    """Mirrors the example horizontally; `flip_map` ([K] ints) swaps left/right keypoints."""
    out = dict(example)
    image = example["image"]
    width = tf.cast(_size(image)[1], tf.float32)
    out["image"] = tf.reverse(image, [1])
    if "boxes" in example:
        x1, y1, x2, y2 = tf.unstack(example["boxes"], 4, axis=-1)
        out["boxes"] = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
    for key in ("masks", "box_masks", "semantic"):  # a box crop mirrors with its box
        if key in example:
            out[key] = tf.reverse(example[key], [-1])
    if "keypoints" in example:
        kps = example["keypoints"]
        if flip_map is not None:
            kps = tf.gather(kps, tf.constant(flip_map, tf.int32), axis=1)
        x, y, v = tf.unstack(kps, 3, axis=-1)
        out["keypoints"] = tf.stack([tf.where(v > 0, width - x, x), y, v], axis=-1)
    return out


def random_flip(example, seed, prob=0.5, flip_map=None):
    """flip_left_right with probability `prob` (stateless: the same seed gives the same choice)."""
    flip = tf.random.stateless_uniform([], seed) < prob
    return tf.cond(flip, lambda: flip_left_right(example, flip_map), lambda: dict(example))


SIZE_RULES = ("round", "torchvision")


def keep_ratio_size(height, width, short_side, long_side, rule="round"):
    """(new_h, new_w) int32 of the keep-ratio resize: ratio = min(short / min(h, w), long / max(h, w)).

    rule "round" (mmdetection): ratio in float32, sizes rounded, at least 1.
    rule "torchvision" (GeneralizedRCNNTransform -> interpolate(scale_factor=ratio,
      recompute_scale_factor=True)): ratio in float64, sizes floor(h * ratio) in float64, so that
      157 x 224/157 = 223.99999999999997 gives 223 pixels, not 224.
    """
    if rule not in SIZE_RULES:
        raise ValueError(f"keep_ratio_size: rule must be one of {SIZE_RULES}, got {rule!r}.")
    dtype = tf.float32 if rule == "round" else tf.float64
    hf, wf = tf.cast(height, dtype), tf.cast(width, dtype)
    ratio = tf.minimum(tf.cast(short_side, dtype) / tf.minimum(hf, wf), tf.cast(long_side, dtype) / tf.maximum(hf, wf))
    to_int = tf.round if rule == "round" else tf.floor
    return tuple(tf.maximum(tf.cast(to_int(v * ratio), tf.int32), 1) for v in (hf, wf))


def resize_keep_ratio(example, short_side, long_side, rule="round"):
    """Resizes so that the short edge is `short_side` unless the long edge would exceed `long_side`
    (then the long edge is `long_side`): the (1333, 800) rule. Output size follows keep_ratio_size(rule)
    and boxes/keypoints scale by the exact per-axis ratio new/old, recorded (accumulated) in `scale`.
    Images become float32 (bilinear); masks and semantic maps use nearest neighbour."""
    out = dict(example)
    image = example["image"]
    h, w = _size(image)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    new_h, new_w = keep_ratio_size(h, w, short_side, long_side, rule)
    sy, sx = tf.cast(new_h, tf.float32) / hf, tf.cast(new_w, tf.float32) / wf
    out["image"] = tf.image.resize(tf.cast(image, tf.float32), [new_h, new_w], method="bilinear")
    if "boxes" in example:
        out["boxes"] = example["boxes"] * tf.stack([sx, sy, sx, sy])
    if "keypoints" in example:
        out["keypoints"] = example["keypoints"] * tf.stack([sx, sy, 1.0])
    if "masks" in example:
        masks = tf.transpose(example["masks"], [1, 2, 0])  # N as channels
        masks = tf.image.resize(masks, [new_h, new_w], method="nearest")
        out["masks"] = tf.transpose(masks, [2, 0, 1])
    if "semantic" in example:
        out["semantic"] = tf.image.resize(example["semantic"][..., None], [new_h, new_w], method="nearest")[..., 0]
    out["scale"] = example.get("scale", tf.ones([2], tf.float32)) * tf.stack([sy, sx])
    out["valid_size"] = tf.stack([new_h, new_w])
    return out


def resize_to_scale(example, scale=(1333, 800), rule="round"):
    """Keep-ratio resize to an mmdetection-style scale (long, short) given in either order."""
    return resize_keep_ratio(example, min(scale), max(scale), rule)


def random_resize(example, seed, short_range=(400, 1400), long_side=1600, rule="round"):
    """Multi-scale training: the short edge is drawn uniformly from the integers in `short_range`
    (inclusive), the long edge capped at `long_side` (HTC's 400-1400 / 1600); sizes by keep_ratio_size(rule)."""
    short = tf.random.stateless_uniform([], seed, minval=int(short_range[0]), maxval=int(short_range[1]) + 1,
                                        dtype=tf.int32)
    return resize_keep_ratio(example, short, long_side, rule)


def pad_to_size(example, size):
    """Pads image (0), masks (0) and semantic map (255 = ignore) at the bottom/right to `size` (h, w),
    giving them static shapes. `valid_size` keeps the unpadded size. Fails if the image is larger."""
    th, tw = int(size[0]), int(size[1])
    h, w = _size(example["image"])
    check = tf.debugging.assert_less_equal(
        tf.stack([h, w]), tf.constant([th, tw]),
        message=f"pad_to_size: image larger than the padded size {th}x{tw}")
    with tf.control_dependencies([check]):
        out = _pad(example, tf.identity(th), tw)
    out["image"] = tf.ensure_shape(out["image"], [th, tw, example["image"].shape[-1]])
    if "masks" in out:
        out["masks"] = tf.ensure_shape(out["masks"], [None, th, tw])
    if "semantic" in out:
        out["semantic"] = tf.ensure_shape(out["semantic"], [th, tw])
    return out


def pad_to_multiple(example, multiple=32):
    """Pads at the bottom/right to the next multiple of `multiple` (a dynamic shape; `pad_to_size`
    gives static ones)."""
    h, w = _size(example["image"])
    return _pad(example, (h + multiple - 1) // multiple * multiple, (w + multiple - 1) // multiple * multiple)


def _pad(example, th, tw):
    out = dict(example)
    h, w = _size(example["image"])
    out["image"] = tf.pad(example["image"], [[0, th - h], [0, tw - w], [0, 0]])
    if "masks" in example:
        out["masks"] = tf.pad(example["masks"], [[0, 0], [0, th - h], [0, tw - w]])
    if "semantic" in example:
        out["semantic"] = tf.pad(example["semantic"], [[0, th - h], [0, tw - w]], constant_values=255)
    out.setdefault("valid_size", tf.stack([h, w]))
    return out


def crop_masks_to_boxes(masks, boxes, size):
    """Crops each full-image mask to its box and resamples it to `size` x `size`: uint8 [N, size, size].

    Cell (i, j) holds the mask bilinearly sampled at the centre of the (i, j)-th of size x size equal
    bins of the box, thresholded at 0.5: RoIAlign's `aligned=True` convention with one sample per bin,
    so the crop of a mirrored mask in the mirrored box is the mirrored crop. Outside the image is 0.
    Mask R-CNN targets for a proposal P matched to box B are then RoIAlign(crop, P expressed in B's
    crop frame: (P - B.x1) * size / B.width, likewise for y)."""
    if size < 2:
        raise ValueError(f"crop_masks_to_boxes: size must be >= 2, got {size}.")
    masks = tf.convert_to_tensor(masks)
    boxes = tf.cast(boxes, tf.float32)
    n = tf.shape(masks)[0]
    # One zero pixel of border so that samples within half a pixel of the image edge interpolate
    # like interior ones; crop_and_resize samples pixel-index coordinates (pixel centres).
    padded = tf.pad(tf.cast(masks, tf.float32), [[0, 0], [1, 1], [1, 1]])[..., None]
    height = tf.cast(tf.shape(padded)[1], tf.float32)
    width = tf.cast(tf.shape(padded)[2], tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    # first sample centre, in pixel-index coordinates of the padded mask: x1 + bin/2 - 0.5 + 1
    first_x, first_y = x1 + 0.5 * bin_w + 0.5, y1 + 0.5 * bin_h + 0.5
    last_x, last_y = first_x + (size - 1) * bin_w, first_y + (size - 1) * bin_h
    norm = tf.stack([first_y / (height - 1), first_x / (width - 1), last_y / (height - 1), last_x / (width - 1)],
                    axis=-1)
    crops = tf.image.crop_and_resize(padded, norm, tf.range(n), [size, size], extrapolation_value=0.0)
    return tf.cast(crops[..., 0] >= 0.5, tf.uint8)
