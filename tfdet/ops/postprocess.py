"""torchvision's detection post-processing, as pure TF functions (to reproduce the source exactly).

  resize_weights        [out, in] matrix of torch.nn.functional.interpolate(mode="bilinear" | "bicubic",
                        align_corners=False, antialias=False) along one axis
  scale_to_original     boxes / keypoints from the network input back to the original image
                        (torchvision transform.resize_boxes / resize_keypoints)
  paste_masks_torchvision
                        roi_heads.paste_masks_in_image: 28x28 mask probabilities padded to 30x30, boxes
                        expanded by 30/28 and truncated to integers, a bilinear resize to the integer
                        box size (x2 - x1 + 1), pasted at the integer box corner
  heatmaps_to_keypoints_torchvision
                        roi_heads.heatmaps_to_keypoints: each heatmap resized bicubically to
                        (ceil(h), ceil(w)) of its box, arg-max, x = x1 + (ix + 0.5) * w / ceil(w)

They differ from detectron2's conventions (tfdet.modeling.roi_heads.mask_head.paste_masks: a mask covers
its float box exactly; keypoint_head.heatmaps_to_keypoints: arg-max cell centre on the 56x56 map), by up
to a pixel for masks and half a heatmap cell for keypoints.
"""

import tensorflow as tf

CUBIC_A = -0.75  # torch's bicubic coefficient (PIL / OpenCV use -0.5 / -0.75; TF's resize uses -0.5)


def resize_weights(out_size, in_size, method="bilinear"):
    """[out_size, in_size] float32 weights W of a 1-D resize out = W @ in, exactly as torch's
    interpolate(align_corners=False, antialias=False) computes them (bilinear bit-exact, bicubic within
    1e-6): scale = in / out,
    source coordinate (i + 0.5) * scale - 0.5; bilinear clamps it at 0 and uses the two neighbours
    (the last one repeated at the border), bicubic uses 4 taps with A = -0.75 and clamped indices.
    out_size, in_size: ints or int32 scalar tensors."""
    if method not in ("bilinear", "bicubic"):
        raise ValueError(f"resize_weights: method must be 'bilinear' or 'bicubic', got {method!r}.")
    # torch: scale = float(in) / out in float32, source index scale * (i + 0.5) - 0.5 rounded once to
    # float32 (its CPU kernels contract this to a fused multiply-add; exact in float64, then rounded)
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    centres = tf.range(tf.cast(out_size, tf.float64), dtype=tf.float64) + 0.5
    src = tf.cast(tf.cast(scale, tf.float64) * centres - 0.5, tf.float32)
    last = tf.cast(in_size, tf.int32) - 1
    if method == "bilinear":
        src = tf.maximum(src, 0.0)
        low = tf.minimum(tf.cast(tf.floor(src), tf.int32), last)
        frac = tf.clip_by_value(src - tf.cast(low, tf.float32), 0.0, 1.0)
        high = tf.minimum(low + 1, last)
        return (tf.one_hot(low, in_size) * (1.0 - frac)[:, None] + tf.one_hot(high, in_size) * frac[:, None])
    low = tf.cast(tf.floor(src), tf.int32)
    t = src - tf.cast(low, tf.float32)
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    coefficients = (far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t))
    weights = 0.0
    for offset, c in zip((-1, 0, 1, 2), coefficients):
        weights += tf.one_hot(tf.clip_by_value(low + offset, 0, last), in_size) * c[:, None]
    return weights


def scale_to_original(points, network_size, original_size):
    """Boxes [..., 4] (x1, y1, x2, y2) or keypoints [..., K, 3] (x, y, v) from network-input pixels of
    an image resized to `network_size` (h, w) back to its `original_size`: x * (W_orig / W_net),
    y * (H_orig / H_net), the ratios in float32 as torchvision's resize_boxes / resize_keypoints.
    Sizes: (h, w) ints/tensors, or [B, 2] for [B, ...] inputs."""
    points = tf.convert_to_tensor(points, tf.float32)
    ratio = tf.cast(original_size, tf.float32) / tf.cast(network_size, tf.float32)  # (ry, rx)
    while ratio.shape.rank < points.shape.rank:
        ratio = ratio[..., None, :]
    ry, rx = ratio[..., 0], ratio[..., 1]
    if points.shape[-1] == 4:
        return tf.stack([points[..., 0] * rx, points[..., 1] * ry, points[..., 2] * rx, points[..., 3] * ry], -1)
    if points.shape[-1] == 3:
        return tf.stack([points[..., 0] * rx, points[..., 1] * ry, points[..., 2]], -1)
    raise ValueError(f"scale_to_original: points must be boxes [..., 4] or keypoints [..., 3], got {points.shape}.")


def _paste_axis_weights(low, length, image_size, mask_size):
    """[..., image_size, mask_size]: image pixel p reads row p - low of the mask resized (bilinear) to
    `length` pixels; zero outside [low, low + length). low, length: int32 [...]."""
    flat_low, flat_len = tf.reshape(low, [-1]), tf.reshape(length, [-1])

    def one(args):
        start, size = args
        weights = resize_weights(size, mask_size)  # [size, mask_size]
        index = tf.range(image_size) - start
        inside = (index >= 0) & (index < size)
        return tf.where(inside[:, None], tf.gather(weights, tf.clip_by_value(index, 0, size - 1)), 0.0)

    out = tf.map_fn(one, (flat_low, flat_len), fn_output_signature=tf.TensorSpec([None, mask_size], tf.float32))
    return tf.reshape(out, tf.concat([tf.shape(low), [image_size, mask_size]], 0))


def paste_masks_torchvision(masks, boxes, image_size, threshold=0.5, padding=1):
    """torchvision paste_masks_in_image (models/detection/roi_heads.py), batched and padded.

    Each mask [M, M] is zero-padded by `padding` to M + 2p, its box (x1, y1, x2, y2) is expanded about
    its centre by (M + 2p) / M and truncated to integers (toward zero, as tensor.to(int64)); the padded
    mask is resized (bilinear, align_corners=False) to (y2 - y1 + 1, x2 - x1 + 1) pixels (at least 1)
    and written at (x1, y1), clipped to the image. Probabilities above `threshold` are foreground.

    Args:
      masks: [B, K, M, M] probabilities. boxes: [B, K, 4] in the pixels of the image to paste into
        (torchvision: the original image, after scale_to_original).
      image_size: (height, width), Python ints or int32 scalar tensors.
      threshold: a float (foreground where probability > threshold), or None for the probabilities.
    Returns:
      [B, K, height, width] uint8 0/1, or float32 probabilities.
    """
    masks, boxes = tf.cast(masks, tf.float32), tf.cast(boxes, tf.float32)
    if masks.shape.rank != 4 or boxes.shape.rank != 3:
        raise ValueError(f"paste_masks_torchvision: masks must be [B, K, M, M] and boxes [B, K, 4], got "
                         f"{masks.shape}, {boxes.shape}.")
    mask_size = masks.shape[-1] + 2 * padding
    masks = tf.pad(masks, [[0, 0], [0, 0], [padding, padding], [padding, padding]])
    scale = tf.constant(mask_size / (mask_size - 2 * padding), tf.float32)
    half = (boxes[..., 2:] - boxes[..., :2]) * 0.5 * scale
    centre = (boxes[..., 2:] + boxes[..., :2]) * 0.5
    corners = tf.cast(tf.concat([centre - half, centre + half], -1), tf.int32)  # truncation toward zero
    sizes = tf.maximum(corners[..., 2:] - corners[..., :2] + 1, 1)  # (w, h)
    height, width = image_size
    weights_y = _paste_axis_weights(corners[..., 1], sizes[..., 1], height, mask_size)  # [B, K, H, M']
    weights_x = _paste_axis_weights(corners[..., 0], sizes[..., 0], width, mask_size)  # [B, K, W, M']
    pasted = tf.einsum("nkic,nkjc->nkij", tf.einsum("nkia,nkac->nkic", weights_y, masks), weights_x)
    if threshold is None:
        return pasted
    return tf.cast(pasted > threshold, tf.uint8)


def heatmaps_to_keypoints_torchvision(heatmaps, boxes):
    """torchvision heatmaps_to_keypoints (models/detection/roi_heads.py), batched.

    For a box of width w = max(x2 - x1, 1) (likewise h), each S x S heatmap is resized bicubically
    (align_corners=False, A = -0.75) to ceil(h) x ceil(w); its arg-max (ix, iy) (the first one in
    row-major order) gives x = x1 + (ix + 0.5) * w / ceil(w), y likewise, and the score is the resized
    heatmap's value there.

    Args:
      heatmaps: [B, R, S, S, K] logits (NHWC). boxes: [B, R, 4] in network-input pixels.
    Returns:
      [B, R, K, 3] (x, y, score): torchvision's keypoints (x, y, 1) with the visibility replaced by its
      keypoints_scores.
    """
    heatmaps, boxes = tf.cast(heatmaps, tf.float32), tf.cast(boxes, tf.float32)
    if heatmaps.shape.rank != 5 or boxes.shape.rank != 3:
        raise ValueError(f"heatmaps_to_keypoints_torchvision: heatmaps must be [B, R, S, S, K] and boxes "
                         f"[B, R, 4], got {heatmaps.shape}, {boxes.shape}.")
    shape = tf.shape(heatmaps)
    size, num_keypoints = heatmaps.shape[2], heatmaps.shape[4]
    maps = tf.reshape(tf.transpose(heatmaps, [0, 1, 4, 2, 3]), [-1, num_keypoints, size, size])
    flat_boxes = tf.reshape(boxes, [-1, 4])

    def one(args):
        heatmap, box = args
        width, height = tf.maximum(box[2] - box[0], 1.0), tf.maximum(box[3] - box[1], 1.0)
        out_w, out_h = tf.cast(tf.math.ceil(width), tf.int32), tf.cast(tf.math.ceil(height), tf.int32)
        resized = tf.einsum("ya,kab,xb->kyx", resize_weights(out_h, size, "bicubic"), heatmap,
                            resize_weights(out_w, size, "bicubic"))
        flat = tf.reshape(resized, [num_keypoints, -1])
        best = tf.argmax(flat, axis=1, output_type=tf.int32)
        score = tf.gather(flat, best, batch_dims=1)
        ix, iy = tf.cast(best % out_w, tf.float32), tf.cast(best // out_w, tf.float32)
        x = (ix + 0.5) * (width / tf.cast(out_w, tf.float32)) + box[0]
        y = (iy + 0.5) * (height / tf.cast(out_h, tf.float32)) + box[1]
        return tf.stack([x, y, score], axis=-1)

    out = tf.map_fn(one, (maps, flat_boxes), fn_output_signature=tf.TensorSpec([num_keypoints, 3], tf.float32))
    return tf.reshape(out, tf.stack([shape[0], shape[1], num_keypoints, 3]))
