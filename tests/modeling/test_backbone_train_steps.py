"""ResNeXt (grouped 3x3 convs) and DCN ResNet backbones train with TensorFlow's oneDNN CPU kernels and
without them (cpu_kernels: .ci/run runs these under TF_ENABLE_ONEDNN_OPTS=0 and =1): a tf.function SGD
step gives a finite, nonzero gradient for every trainable weight and lowers the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.backbones import resnet

pytestmark = pytest.mark.cpu_kernels


@pytest.mark.parametrize("kwargs,layer_class", [
    ({"groups": 32, "base_width": 4}, "GroupedConv2D"),
    ({"stage_with_dcn": (False, True, False, False), "dcn": {"modulated": True, "deformable_groups": 2}},
     "ModulatedDeformConv2D"),
    ({"stage_with_dcn": (False, True, False, False), "dcn": {"modulated": False, "deformable_groups": 1}},
     "DeformConv2D"),
])
def test_train_step(kwargs, layer_class):
    keras.utils.set_random_seed(0)
    model = resnet(50, norm="bn", out_levels=(3,), **kwargs)  # stem + stages 1-2 only
    assert type(model.get_layer("layer2_0_conv2")).__name__ == layer_class
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), tf.float32)
    weights = model.trainable_weights

    @tf.function
    def loss_and_grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)[3] - 1.0))
        return loss, tape.gradient(loss, weights)

    loss, grads = loss_and_grads()
    for w, g in zip(weights, grads):
        assert g is not None and np.all(np.isfinite(g.numpy())) and np.any(g.numpy() != 0), w.path
    # a small step against the gradient (step length 1e-2 in weight space) must lower the loss
    rate = 1e-2 / float(tf.linalg.global_norm(grads))
    for w, g in zip(weights, grads):
        w.assign_sub(rate * g)
    after, _ = loss_and_grads()
    assert float(after) < float(loss), (float(loss), float(after))
