"""Argument checks and dtype handling shared by the public wrappers of the custom ops.

Every message starts with the op's name and names the argument, so a user sees which call is wrong.
"""

import tensorflow as tf

COMPUTE_DTYPES = (tf.float32, tf.float64)  # what the kernels compute in; narrower floats go through float32


def pair(value, op, name, minimum=1):
    """An int or a pair of ints >= minimum as a (height, width) tuple."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, got {value!r}.")
    return value


def floating(value, op, name):
    """`value` as a tensor, which must be floating point."""
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_floating:
        raise ValueError(f"{op}: {name} must be floating point, got {tensor.dtype.name}.")
    return tensor


def compute_dtype(dtype):
    """The dtype the kernels run in for inputs of `dtype` (float16 / bfloat16 -> float32)."""
    return dtype if dtype in COMPUTE_DTYPES else tf.float32


def check_rank(tensor, rank, op, name, layout):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"{op}: {name} must have rank {rank} {layout}, got shape {tensor.shape}.")


def roi_inputs(op, features, boxes, box_indices):
    """Checks and converts the (features, boxes, box_indices) of an RoI pooling op.

    Returns (features, boxes, box_indices, out_dtype): features and boxes cast to the compute dtype,
    box_indices int32 and, at run time, asserted to lie in [0, N); out_dtype is the features' own dtype,
    which the op's result is cast back to.
    """
    features = floating(features, op, "features")
    boxes = tf.convert_to_tensor(boxes)
    box_indices = tf.cast(box_indices, tf.int32)
    check_rank(features, 4, op, "features", "[N, H, W, C]")
    check_rank(boxes, 2, op, "boxes", "[K, 4]")
    check_rank(box_indices, 1, op, "box_indices", "[K]")
    if boxes.shape.rank is not None and boxes.shape[-1] not in (None, 4):
        raise ValueError(f"{op}: boxes must be [K, 4], got shape {boxes.shape}.")
    if boxes.shape.rank is not None and None not in (boxes.shape[0], box_indices.shape[0]) and \
            boxes.shape[0] != box_indices.shape[0]:
        raise ValueError(f"{op}: boxes {boxes.shape} and box_indices {box_indices.shape} differ in K.")
    compute = compute_dtype(features.dtype)
    batch = tf.shape(features, out_type=tf.int32)[0]
    checks = [
        tf.debugging.assert_non_negative(box_indices, message=f"{op}: box_indices must be >= 0"),
        tf.debugging.assert_less(box_indices, batch, message=f"{op}: box_indices must be < the features' batch size"),
    ]
    with tf.control_dependencies(checks):
        box_indices = tf.identity(box_indices)
    return tf.cast(features, compute), tf.cast(boxes, compute), box_indices, features.dtype


# The sampling-grid limit of the RoI ops (custom_ops/roi_align/kernels/roi_align.h, grid_limit): a bin has
# at most max(64, ceil(4 * feature-map side / output side)) samples per side. Every box up to 4 times the
# feature map's size meets it with the adaptive grid, and so does every sampling_ratio <= 64.
GRID_LIMIT_FLOOR = 64
GRID_LIMIT_MAP_FACTOR = 4
_GRID_LIMIT_RULE = (f"the limit per bin side is max({GRID_LIMIT_FLOOR}, ceil({GRID_LIMIT_MAP_FACTOR} * feature side "
                    f"/ output side))")


def scaled_boxes(boxes, spatial_scale, aligned):
    """The boxes [K, 4] on the feature map (times spatial_scale, minus 0.5 when aligned) as (corners,
    defined): `defined` [K] is False for a box with a NaN or infinite corner, width or height (its bins are
    NaN in every RoI op), and such boxes' corners are replaced by zeros so that nothing downstream sees them.
    Slices rather than unstacks, so the boxes' last dimension may be unknown when traced."""
    corners = boxes * spatial_scale - (0.5 if aligned else 0.0)
    size = corners[:, 2:] - corners[:, :2]
    defined = tf.reduce_all(tf.math.is_finite(tf.concat([corners, size], -1)), -1)
    return tf.where(defined[:, None], corners, tf.zeros_like(corners)), defined


def grid_checks(op, features, corners, out_h, out_w, sampling_ratio, aligned):
    """Assertions, to run before any work, that every bin's sampling grid is within the limit above: a
    sampling_ratio beyond it, or (sampling_ratio=0) a box whose adaptive grid ceil(side / output side) is,
    raises InvalidArgumentError naming the value and the limit. `corners` come from scaled_boxes."""
    shape = tf.shape(features)
    limits = tf.maximum(GRID_LIMIT_FLOOR, tf.minimum((GRID_LIMIT_MAP_FACTOR * shape[1:3] + [out_h - 1, out_w - 1])
                                                     // [out_h, out_w], 2**20))
    where = f"for features of height {{}} and width {{}} and output {out_h}x{out_w} ({_GRID_LIMIT_RULE})"
    if sampling_ratio > 0:
        if sampling_ratio <= GRID_LIMIT_FLOOR:
            return []
        message = tf.strings.format(f"{op}: sampling_ratio = {sampling_ratio} exceeds the limit of {{}} x {{}} "
                                    f"samples per bin {where}", [limits[0], limits[1], shape[1], shape[2]])
        return assert_that(tf.reduce_all(sampling_ratio <= limits), message)
    sizes = corners[:, 2:] - corners[:, :2]  # (width, height)
    if not aligned:
        sizes = tf.maximum(sizes, 1.0)
    cells = tf.maximum(tf.math.ceil(sizes[:, ::-1] / tf.cast([out_h, out_w], sizes.dtype)), 0.0)  # (h, w)
    over = tf.reduce_any(cells > tf.cast(limits, cells.dtype), -1)
    first = tf.argmax(tf.concat([tf.cast(over, tf.int32), [0]], 0), output_type=tf.int32)
    first_cells = tf.concat([cells, tf.zeros([1, 2], cells.dtype)], 0)[first]
    message = tf.strings.format(
        f"{op}: box {{}} has an adaptive sampling grid (sampling_ratio = 0) of {{}} x {{}} samples per bin, beyond "
        f"the limit of {{}} x {{}} {where}, which every box up to {GRID_LIMIT_MAP_FACTOR} times the feature map's "
        f"size meets; clip the boxes or pass a sampling_ratio > 0",
        [first, first_cells[0], first_cells[1], limits[0], limits[1], shape[1], shape[2]])
    return assert_that(tf.logical_not(tf.reduce_any(over)), message)


def assert_that(condition, message):
    """[an op that raises InvalidArgumentError(message) unless `condition`] (for control dependencies) in a
    graph; in eager mode raises at once, with the message as it is (no "Summarized data" wrapping)."""
    if tf.executing_eagerly():
        if not bool(condition):
            raise tf.errors.InvalidArgumentError(None, None, message.numpy().decode())
        return []
    return [tf.debugging.Assert(condition, [message])]


def flat_boxes(boxes, who):
    """Padded per-image boxes [B, K, 4] as (the ops' flat [B * K, 4] boxes, their [B * K] image indices,
    B, K), B and K as scalar tensors for reshaping the pooled result back."""
    boxes = tf.convert_to_tensor(boxes)
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"{who}: boxes must be [B, K, 4], got shape {boxes.shape}.")
    batch, num_boxes = tf.shape(boxes)[0], tf.shape(boxes)[1]
    return tf.reshape(boxes, [-1, 4]), tf.repeat(tf.range(batch, dtype=tf.int32), num_boxes), batch, num_boxes
