"""Random sampling: exact counts from the RandomSampler rules, consistency, uniformity, seeds."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops.sampling import sample


def check(labels, out, num, fraction, neg_pos_ub=-1):
    labels = np.asarray(labels)
    indices, is_pos, valid, mask = (t.numpy() for t in out)
    assert indices.shape == (labels.shape[0], num) and mask.shape == labels.shape
    for b in range(labels.shape[0]):
        npos, nneg = (labels[b] == 1).sum(), (labels[b] == 0).sum()
        want_pos = min(npos, int(num * fraction))
        quota = num - want_pos
        if neg_pos_ub >= 0:
            quota = min(quota, int(neg_pos_ub * max(1, want_pos)))
        want_neg = min(nneg, quota)
        taken = indices[b][valid[b]]
        assert len(taken) == want_pos + want_neg
        np.testing.assert_array_equal(valid[b], np.arange(num) < want_pos + want_neg)  # padding at the end
        np.testing.assert_array_equal(indices[b][~valid[b]], -1)
        assert len(set(taken.tolist())) == len(taken)  # without replacement
        np.testing.assert_array_equal(labels[b][taken], np.where(is_pos[b][valid[b]], 1, 0))
        np.testing.assert_array_equal(is_pos[b], np.arange(num) < want_pos)  # positives first
        np.testing.assert_array_equal(np.sort(np.nonzero(mask[b])[0]), np.sort(taken))


@pytest.mark.parametrize("num,fraction,ub", [(256, 0.5, -1), (512, 0.25, -1), (16, 0.25, 3), (8, 0.0, -1)])
def test_counts_and_consistency(num, fraction, ub):
    rng = np.random.default_rng(7)
    n = 700
    labels = rng.choice([-1, 0, 1], size=(4, n), p=[0.3, 0.6, 0.1])
    labels[1] = np.where(rng.uniform(size=n) < 0.5, 1, -1)  # many positives, no negatives
    labels[2] = -1  # nothing to sample
    labels[3, :5] = 1  # few positives
    labels[3, 5:] = np.where(rng.uniform(size=n - 5) < 0.02, 0, -1)  # few negatives
    out = sample(labels, num, fraction, neg_pos_ub=ub, seed=[1, 2])
    check(labels, out, num, fraction, ub)


def test_fewer_boxes_than_samples():
    labels = np.array([[1, 0, 0, -1, 1]])
    out = sample(labels, 16, 0.5, seed=[3, 4])
    check(labels, out, 16, 0.5)


def test_stateless_seed_reproducible():
    labels = np.random.default_rng(8).choice([-1, 0, 1], size=(2, 300))
    a = sample(labels, 32, 0.5, seed=[5, 6]).indices.numpy()
    b = sample(labels, 32, 0.5, seed=[5, 6]).indices.numpy()
    c = sample(labels, 32, 0.5, seed=[5, 7]).indices.numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_uniform_choice():
    # One positive out of 4 per row, 4000 rows: each position should be drawn ~1000 times.
    labels = np.ones((4000, 4), np.int32)
    out = sample(labels, 2, 0.5, seed=[9, 10])
    first = out.indices.numpy()[:, 0]
    counts = np.bincount(first, minlength=4)
    assert counts.sum() == 4000
    chi2 = ((counts - 1000.0) ** 2 / 1000.0).sum()
    assert chi2 < 16.3  # p = 0.001 for 3 degrees of freedom


def test_graph_mode_dynamic_n():
    fn = tf.function(lambda labels, seed: sample(labels, 8, 0.25, seed=seed),
                     input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([2], tf.int32)])
    labels = np.random.default_rng(11).choice([-1, 0, 1], size=(3, 50)).astype(np.int32)
    check(labels, fn(labels, tf.constant([1, 1])), 8, 0.25)


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        sample(np.zeros(5, np.int32), 4, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        sample(np.zeros((1, 5), np.int32), 4, 1.5)


def test_xla_compiles_and_agrees():
    labels = np.random.default_rng(12).choice([-1, 0, 1], size=(2, 100)).astype(np.int32)
    eager = sample(labels, 16, 0.25, seed=[2, 3])
    compiled = tf.function(lambda x: sample(x, 16, 0.25, seed=[2, 3]), jit_compile=True)(labels)
    for a, b in zip(eager, compiled):
        np.testing.assert_array_equal(a, b)
