"""Candidate selection of dense detection heads: the k best (anchor, class) pairs above a score threshold.

tfdet's RetinaNet inference keeps the k anchors with the best maximum class score and all their classes.
mmdetection (BaseDenseHead._predict_by_feat_single with filter_scores_and_topk, since its one-stage
refactor of mid-2021 and in 3.x) and torchvision's RetinaNet instead rank every (anchor, class) pair:
per level, the pairs whose score passes the threshold, the k best of them, each a candidate of its own
class. `class_topk` is that selection, batched and padded.
"""

from typing import NamedTuple

import tensorflow as tf


class ClassTopK(NamedTuple):
    """anchors, classes [B, K] int32 (-1 padding); scores [B, K] (0 padding); valid [B, K] bool.
    Valid entries come first, by decreasing score."""

    anchors: tf.Tensor
    classes: tf.Tensor
    scores: tf.Tensor
    valid: tf.Tensor


def class_topk(scores, k, score_threshold=float("-inf")):
    """The k best (anchor, class) pairs of [B, N, C] scores with score > score_threshold.

    K = min(k, N * C) when N and C are static (else k, padded). Fewer than K pairs above the threshold
    leave padding entries (valid False).
    """
    scores = tf.convert_to_tensor(scores)
    if scores.shape.rank != 3:
        raise ValueError(f"class_topk: scores must be [B, N, C], got shape {scores.shape}.")
    num_classes = scores.shape[2] if scores.shape[2] is not None else tf.shape(scores)[2]
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    passing = flat > score_threshold
    total = flat.shape[1]
    size = min(int(k), total) if total is not None else tf.minimum(int(k), tf.shape(flat)[1])
    ranked = tf.where(passing, flat, tf.cast(float("-inf"), flat.dtype))
    top_scores, top = tf.math.top_k(ranked, k=size)
    valid = tf.gather(passing, top, batch_dims=1)
    return ClassTopK(anchors=tf.where(valid, top // num_classes, -1), classes=tf.where(valid, top % num_classes, -1),
                     scores=tf.where(valid, top_scores, tf.zeros([], flat.dtype)), valid=valid)
