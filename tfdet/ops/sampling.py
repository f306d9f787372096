"""Random positive/negative sampling on padded tensors (mmdetection RandomSampler), static shapes.

Per image: up to int(num_samples * positive_fraction) positives drawn uniformly without
replacement, then negatives fill the rest (num_samples - sampled positives, optionally bounded by
neg_pos_ub * max(1, sampled positives)). A uniform random subset is the top-k of i.i.d. uniform
keys, which keeps everything static-shaped and reproducible with a stateless seed.

Presets: RPN sample(labels, 256, 0.5); R-CNN sample(labels, 512, 0.25) (mmdetection adds the
ground-truth boxes to the proposals before matching; that is the caller's job).
"""

from typing import NamedTuple

import tensorflow as tf


class SampleResult(NamedTuple):
    """indices: [B, num_samples] int32 box indices, sampled positives first, then negatives, -1 padding.
    is_positive: [B, num_samples] bool. valid: [B, num_samples] bool (indices >= 0).
    mask: [B, N] bool, the sampled boxes (for losses over all boxes)."""

    indices: tf.Tensor
    is_positive: tf.Tensor
    valid: tf.Tensor
    mask: tf.Tensor


def sample(labels, num_samples, positive_fraction, neg_pos_ub=-1, seed=None):
    """Samples boxes by their matching labels.

    Args:
      labels: [B, N] int, 1 positive, 0 negative, anything else (-1) is never sampled.
      num_samples: samples per image (static).
      positive_fraction: the most positives, as a fraction of num_samples.
      neg_pos_ub: if >= 0, at most neg_pos_ub * max(1, sampled positives) negatives.
      seed: optional shape-[2] int seed for stateless sampling; None uses the global generator.
    Returns:
      SampleResult.
    """
    if num_samples < 1 or not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"sample: need num_samples >= 1 and positive_fraction in [0, 1], got {num_samples}, "
                         f"{positive_fraction}.")
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2:
        raise ValueError(f"sample: labels must be [B, N], got shape {labels.shape}.")
    num_pos = int(num_samples * positive_fraction)
    shape = tf.shape(labels)
    # float64 keys: ties (which would blur the mask's threshold) are ~1e-10 likely even for 10^5 boxes.
    # Philox explicitly: the same seed gives the same sample on CPU, GPU and under XLA.
    keys = (tf.random.uniform(shape, dtype=tf.float64) if seed is None
            else tf.random.stateless_uniform(shape, seed, dtype=tf.float64, alg="philox"))
    positive, negative = tf.equal(labels, 1), tf.equal(labels, 0)
    # Padding columns keep top_k valid when N < num_samples; their score -1 never counts.
    pad = -tf.ones([shape[0], num_samples], keys.dtype)

    def draw(candidates, k):
        scores = tf.concat([tf.where(candidates, keys, -1.0), pad], axis=1)
        values, indices = tf.math.top_k(scores, k=k)
        return values, indices, values >= 0.0

    pos_values, pos_indices, pos_ok = draw(positive, max(num_pos, 1))
    pos_ok = pos_ok & (tf.range(max(num_pos, 1)) < num_pos)
    taken_pos = tf.reduce_sum(tf.cast(pos_ok, tf.int32), axis=1, keepdims=True)  # [B, 1]
    neg_quota = num_samples - taken_pos
    if neg_pos_ub >= 0:
        neg_quota = tf.minimum(neg_quota, tf.cast(neg_pos_ub * tf.maximum(taken_pos, 1), tf.int32))
    neg_values, neg_indices, neg_ok = draw(negative, num_samples)
    neg_ok = neg_ok & (tf.range(num_samples) < neg_quota)

    # Compact: valid positives (ranks 0..) then valid negatives, into num_samples slots.
    indices = tf.concat([pos_indices, neg_indices], axis=1)
    ok = tf.concat([pos_ok, neg_ok], axis=1)
    is_pos = tf.concat([tf.ones_like(pos_ok), tf.zeros_like(neg_ok)], axis=1)
    order = tf.where(ok, tf.range(tf.shape(ok)[1]), tf.shape(ok)[1] + 1)
    _, slots = tf.math.top_k(-order, k=num_samples)
    valid = tf.gather(ok, slots, batch_dims=1)
    indices = tf.where(valid, tf.gather(indices, slots, batch_dims=1), -1)
    is_positive = valid & tf.gather(is_pos, slots, batch_dims=1)

    # The sampled set of each kind is every candidate whose key reaches the smallest taken key.
    def threshold(values, taken):
        return tf.reduce_min(tf.where(taken, values, 2.0), axis=1, keepdims=True)

    mask = ((positive & (keys >= threshold(pos_values, pos_ok)))
            | (negative & (keys >= threshold(neg_values, neg_ok))))
    return SampleResult(indices=indices, is_positive=is_positive, valid=valid, mask=mask)
