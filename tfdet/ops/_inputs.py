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


def flat_boxes(boxes, who):
    """Padded per-image boxes [B, K, 4] as (the ops' flat [B * K, 4] boxes, their [B * K] image indices,
    B, K), B and K as scalar tensors for reshaping the pooled result back."""
    boxes = tf.convert_to_tensor(boxes)
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"{who}: boxes must be [B, K, 4], got shape {boxes.shape}.")
    batch, num_boxes = tf.shape(boxes)[0], tf.shape(boxes)[1]
    return tf.reshape(boxes, [-1, 4]), tf.repeat(tf.range(batch, dtype=tf.int32), num_boxes), batch, num_boxes
