"""Every op under fully dynamic shapes: traced with tf.function(input_signature=[TensorSpec([None]
* rank)]) for every argument, both impls, forward and gradients equal to the eager result."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.ops import carafe, deform_conv2d, deform_roi_pool, roi_align

IMPLS = ("fused", "composite")


def _unknown(*arrays):
    return [tf.TensorSpec([None] * np.ndim(a), tf.float32) for a in arrays]


def _values_and_grads(fn, arrays):
    """fn(*tensors), and the gradients of sum(fn * upstream) w.r.t. every tensor (zeros if unconnected)."""
    tensors = [tf.convert_to_tensor(a, tf.float32) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = fn(*tensors)
        loss = tf.reduce_sum(out * tf.cos(tf.reshape(tf.range(tf.size(out), dtype=tf.float32), tf.shape(out))))
    return [out] + tape.gradient(loss, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _check_traced_equals_eager(fn, arrays):
    eager = _values_and_grads(fn, arrays)
    traced = tf.function(lambda *t: _values_and_grads(fn, t), input_signature=_unknown(*arrays))(*arrays)
    assert traced[0].shape.rank == eager[0].shape.rank
    assert np.abs(eager[1].numpy()).max() > 0  # the gradient is not trivially zero
    for e, t in zip(eager, traced):
        np.testing.assert_allclose(t.numpy(), e.numpy(), rtol=1e-5, atol=1e-5)


def _roi_case(rng):
    features = rng.normal(size=(2, 9, 11, 3))
    boxes = np.array([[1.2, 0.7, 13.1, 9.4], [-3.3, 2.1, 8.8, 19.6], [4.1, 4.4, 5.2, 6.9]])
    return features, boxes, np.array([0, 1, 1], np.int32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align(impl, sampling_ratio):
    features, boxes, indices = _roi_case(np.random.default_rng(0))
    _check_traced_equals_eager(
        lambda f, b: roi_align(f, b, indices, (3, 2), 0.5, sampling_ratio, impl=impl), [features, boxes])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_deform_roi_pool(impl, sampling_ratio):
    rng = np.random.default_rng(1)
    features, boxes, indices = _roi_case(rng)
    offsets = 0.1 * rng.normal(size=(3, 3, 2, 2))
    _check_traced_equals_eager(
        lambda f, b, o: deform_roi_pool(f, b, indices, o, (3, 2), 0.5, sampling_ratio, impl=impl),
        [features, boxes, offsets])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("groups, deformable_groups", [(1, 1), (2, 2)])
def test_deform_conv2d(impl, groups, deformable_groups):
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(2, 6, 7, 4))
    kernel = rng.normal(size=(3, 2, 4 // groups, 6))
    offsets = rng.normal(size=(2, 3, 6, 2 * deformable_groups * 6))  # stride (2, 1), padding (1, 0)
    mask = rng.uniform(size=(2, 3, 6, deformable_groups * 6))
    bias = rng.normal(size=(6,))
    _check_traced_equals_eager(
        lambda x, o, k, m, b: deform_conv2d(x, o, k, m, b, strides=(2, 1), padding=(1, 0), groups=groups,
                                            deformable_groups=deformable_groups, impl=impl),
        [inputs, offsets, kernel, mask, bias])


@pytest.mark.parametrize("impl", IMPLS)
def test_carafe(impl):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 4, 5, 6))
    masks = rng.normal(size=(2, 8, 10, 2 * 9))
    _check_traced_equals_eager(
        lambda f, m: carafe(f, m, kernel_size=3, group_size=2, scale_factor=2, impl=impl), [features, masks])
