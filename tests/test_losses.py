"""Losses against NumPy written from their definitions, reductions, and numerical gradients."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdet import losses


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_bce(x, t):
    """-(t log p + (1 - t) log(1 - p)), p = sigmoid(x), rearranged to stay finite for large |x|."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def np_focal(x, t, alpha, gamma):
    p = np_sigmoid(x)
    pt = np.where(t == 1, p, 1 - p)  # probability of the true label
    at = np.where(t == 1, alpha, 1 - alpha)
    return -at * (1 - pt) ** gamma * np.log(pt)


def test_focal_hand_computed():
    # logit 0: p = 0.5; positive: 0.25 * 0.5^2 * log 2; negative: 0.75 * 0.5^2 * log 2.
    got = losses.sigmoid_focal_loss([[0.0, 0.0]], [[1.0, 0.0]], reduction="none").numpy()
    np.testing.assert_allclose(got, [[0.0625 * math.log(2), 0.1875 * math.log(2)]], rtol=1e-6)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.25, 1.5)])
def test_focal_matches_numpy_and_reductions(alpha, gamma):
    rng = np.random.default_rng(20)
    x = rng.normal(0, 3, (2, 50, 4))
    t = np.eye(5)[rng.integers(0, 5, (2, 50))][..., :4]  # class 4 = background (all zeros)
    w = (rng.uniform(size=(2, 50)) > 0.2).astype(np.float64)
    want = np_focal(x, t, alpha, gamma)
    got = losses.sigmoid_focal_loss(x, t, alpha, gamma, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)
    num_pos = t.sum()
    got = losses.sigmoid_focal_loss(x, t, alpha, gamma, weights=w, avg_factor=num_pos).numpy()
    np.testing.assert_allclose(got, (want * w[..., None]).sum() / num_pos, rtol=1e-6)
    np.testing.assert_allclose(losses.sigmoid_focal_loss(x, t, alpha, gamma, reduction="sum"), want.sum(), rtol=1e-9)
    np.testing.assert_allclose(losses.sigmoid_focal_loss(x, t, alpha, gamma), want.mean(), rtol=1e-9)


def test_focal_gamma0_alpha_half_is_half_bce():
    x = np.linspace(-20, 20, 41)
    t = (np.arange(41) % 2).astype(np.float64)
    got = losses.sigmoid_focal_loss(x, t, alpha=0.5, gamma=0.0, reduction="none").numpy()
    np.testing.assert_allclose(got, 0.5 * np_bce(x, t), rtol=1e-7)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("beta", [0.0, 1.0 / 9.0, 1.0])
def test_smooth_l1_matches_numpy(beta):
    rng = np.random.default_rng(21)
    p, t = rng.normal(0, 1, (3, 10, 4)), rng.normal(0, 1, (3, 10, 4))
    d = np.abs(p - t)
    want = d if beta == 0 else np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    got = losses.smooth_l1_loss(p, t, beta=beta, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    w = rng.uniform(size=(3, 10))
    got = losses.smooth_l1_loss(p, t, beta=beta, weights=w, avg_factor=7.0).numpy()
    np.testing.assert_allclose(got, (want * w[..., None]).sum() / 7.0, rtol=1e-6)


def test_l1_hand_computed():
    np.testing.assert_allclose(losses.l1_loss([[1.0, -2.0]], [[0.5, 1.0]], reduction="sum"), 3.5)
    np.testing.assert_allclose(losses.smooth_l1_loss([0.5, 3.0], [0.0, 0.0], beta=1.0, reduction="none"),
                               [0.125, 2.5])


def test_cross_entropy_with_ignore_and_weights():
    rng = np.random.default_rng(22)
    logits = rng.normal(0, 2, (6, 5))
    labels = np.array([0, 4, -1, 2, 2, -1])
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    per = np.array([-logp[i, l] if l >= 0 else 0.0 for i, l in enumerate(labels)])
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, reduction="none"), per, rtol=1e-9)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), per.sum() / 4, rtol=1e-9)  # non-ignored
    w = rng.uniform(size=6)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, weights=w, avg_factor=3.0),
                               (per * w).sum() / 3.0, rtol=1e-6)


def test_binary_cross_entropy():
    x, t = np.array([-3.0, 0.0, 2.0, 40.0]), np.array([0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(losses.binary_cross_entropy(x, t, reduction="none"), np_bce(x, t), rtol=1e-9)
    np.testing.assert_allclose(losses.binary_cross_entropy(x, t, weights=[1, 1, 0, 0], avg_factor=2),
                               np_bce(x, t)[:2].sum() / 2, rtol=1e-6)


def test_mask_cross_entropy_selects_class_channel():
    rng = np.random.default_rng(23)
    logits = rng.normal(0, 2, (3, 4, 4, 5))
    targets = (rng.uniform(size=(3, 4, 4)) > 0.5).astype(np.float64)
    labels = np.array([2, 0, 4])
    weights = np.array([1.0, 1.0, 0.0])  # the third RoI is padding
    per = np.stack([np_bce(logits[k, :, :, labels[k]], targets[k]) for k in range(3)])
    got = losses.mask_cross_entropy(logits, targets, labels, weights).numpy()
    np.testing.assert_allclose(got, per[:2].mean(), rtol=1e-9)
    agnostic = losses.mask_cross_entropy(logits[..., :1], targets, labels).numpy()
    np.testing.assert_allclose(agnostic, np_bce(logits[..., 0], targets).mean(), rtol=1e-9)
    assert losses.mask_cross_entropy(logits, targets, labels, np.zeros(3)).numpy() == 0.0


def test_gradients_match_numerical():
    rng = np.random.default_rng(24)
    x = tf.constant(rng.normal(0, 2, (4, 3)))
    t = tf.constant(np.eye(4)[:, :3])
    for fn in (lambda v: losses.sigmoid_focal_loss(v, t, reduction="sum"),
               lambda v: losses.smooth_l1_loss(v, t, beta=0.5, reduction="sum"),
               lambda v: losses.cross_entropy(v, [0, 1, 2, -1])):
        theoretical, numerical = tf.test.compute_gradient(fn, [x])
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        losses.l1_loss([1.0], [0.0], reduction="avg")
    with pytest.raises(ValueError, match="beta"):
        losses.smooth_l1_loss([1.0], [0.0], beta=-1.0)
    with pytest.raises(ValueError, match="mask_logits"):
        losses.mask_cross_entropy(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), [0, 0])
