"""Random positive/negative sampling on padded tensors (mmdetection RandomSampler), static shapes.

Per image: up to int(num_samples * positive_fraction) positives drawn uniformly without
replacement, then negatives fill the rest (num_samples - sampled positives, optionally bounded by
neg_pos_ub * max(1, sampled positives)). A uniform random subset is the top-k of i.i.d. uniform
keys, which keeps everything static-shaped and reproducible with a stateless seed.

Presets: RPN sample(labels, 256, 0.5); R-CNN sample(labels, 512, 0.25) (mmdetection adds the
ground-truth boxes to the proposals before matching; that is the caller's job).

Training draws reproducibly without plumbing a seed through every detector: inside `step_seeds(seed,
step)` (the engine enters it around `fit`), a `sample` without a seed draws from a stateless seed
derived from (seed, the current value of the `step` variable, the replica, the call's rank in the traced
step). The draws are then a pure function of the optimizer step, so a run resumed from a checkpoint
draws what an uninterrupted run draws.
"""

import contextlib
import weakref
from typing import NamedTuple

import tensorflow as tf

_STEP_SEEDS = []  # the active step_seeds scopes: (seed, step variable, {graph: {replica: calls traced}})


@contextlib.contextmanager
def step_seeds(seed, step):
    """Within: `sample(..., seed=None)` uses a seed derived from (`seed`, the value of `step` when the op
    runs, the replica id, the rank of this call among the sample() calls traced in the same tf.function).
    Not thread-local (MirroredStrategy traces its replicas in threads); ranks restart in every traced
    function, so each trace of a train step gives its calls the same seeds."""
    _STEP_SEEDS.append((int(seed), step, weakref.WeakKeyDictionary()))
    try:
        yield
    finally:
        _STEP_SEEDS.pop()


def _scoped_seed():
    """The next seed of the innermost step_seeds scope (shape [2] int64), or None outside any."""
    if not _STEP_SEEDS:
        return None
    base, step, calls = _STEP_SEEDS[-1]
    graph = tf.compat.v1.get_default_graph()
    while getattr(graph, "outer_graph", None) is not None:  # a loop / cond body: rank within the whole step
        graph = graph.outer_graph
    replica = tf.distribute.get_replica_context()
    replica_id = replica.replica_id_in_sync_group if replica is not None else 0
    static_id = tf.get_static_value(replica_id)
    static_id = None if static_id is None else int(static_id)
    per_graph = calls.setdefault(graph, {})
    rank = per_graph[static_id] = per_graph.get(static_id, -1) + 1
    seed = tf.stack([tf.constant(base, tf.int64), tf.cast(tf.convert_to_tensor(step), tf.int64)])
    for value in (rank, replica_id):
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64), alg="philox")
    return seed


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
      seed: optional shape-[2] int seed for stateless sampling; None: the seed of the enclosing
        `step_seeds` scope, else the global generator.
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
    seed = _scoped_seed() if seed is None else seed
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
