"""The train / test steps of the engine (run by tfdet.engine.trainer.Trainer) for any detector with
`compute_losses(batch, training)` returning {name: scalar loss} (each the mean over the replica's images,
mmdetection's convention).

Distribution: each replica's objective is divided by the number of replicas in sync and the gradients
are summed across replicas (Keras' optimizer all-reduces with SUM), so the update is the gradient of
the mean loss over the global batch: a 2-replica run equals a 1-device run on the same global batch.
When gradients must be inspected as a whole (global-norm clipping, or the finite check of dynamic loss
scaling, which must agree on every replica) the step all-reduces them first and hands the optimizer
the replica-mean, which its own SUM all-reduce turns back into the global gradient.
"""

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class StepOptions:
    l2_weight_decay: float = 0.0   # adds wd * w to every trainable weight's gradient after clipping (torch SGD)
    clip_norm: float = 0.0         # global-norm clipping of the summed gradient; 0 = off


def replica_loss_scale():
    """1 / the number of replicas in sync: each replica's share of the global-batch mean."""
    return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync


def train_step(model, batch, options=StepOptions(), optimizer=None):
    """One update of `optimizer` (default: model.optimizer); returns the logs {loss name: value, "loss": total}.

    Order as mmdetection (OptimizerHook + torch SGD): gradient of the mean loss over the global batch,
    global-norm clipping, then + weight_decay * w, then the optimizer's update."""
    optimizer = model.optimizer if optimizer is None else optimizer
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    with tf.GradientTape() as tape:
        losses = {k: tf.cast(v, tf.float32) for k, v in model.compute_losses(batch, training=True).items()}
        total = tf.add_n(list(losses.values()))
        objective = optimizer.scale_loss(total * replica_loss_scale())
    variables = model.trainable_variables  # after the forward pass: a model may build lazily in it
    grads = list(tape.gradient(objective, variables))
    present = [i for i, g in enumerate(grads) if g is not None]
    scale = tf.cast(optimizer.dynamic_scale, tf.float32) if loss_scaled else 1.0
    if options.clip_norm or (loss_scaled and num_replicas > 1):
        summed = [grads[i] for i in present]
        if num_replicas > 1:
            summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, summed)
        if options.clip_norm:
            # Loss-scaled gradients are clipped at the scaled norm (same as clipping the unscaled ones).
            summed, _ = tf.clip_by_global_norm(summed, options.clip_norm * scale)
        for i, g in zip(present, summed):
            grads[i] = g / num_replicas if num_replicas > 1 else g
    if options.l2_weight_decay:
        # each replica adds its share; the optimizer's SUM all-reduce makes it wd * w
        coefficient = options.l2_weight_decay * scale / num_replicas
        for i in present:
            grads[i] = grads[i] + tf.cast(coefficient, grads[i].dtype) * tf.cast(variables[i], grads[i].dtype)
    optimizer.apply(grads, variables)
    return _replica_share({**losses, "loss": total})


def _replica_share(logs):
    """Keras MEAN-reduces the replicas' logs; under MultiWorkerMirroredStrategy it reduces along axis 0,
    which fails on scalars, so there each log is given as [1] (the reduction returns a scalar)."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


def test_step(model, batch):
    losses = {k: tf.cast(v, tf.float32) for k, v in model.compute_losses(batch, training=False).items()}
    return _replica_share({**losses, "loss": tf.add_n(list(losses.values()))})


def with_static_shapes(batch, element_spec):
    """Re-asserts the per-replica batch shapes (multi-worker input hands the step tensors whose batch
    dimension is unknown, since a worker out of data would feed empty batches; the detectors need
    static shapes). `element_spec` None leaves the batch alone."""
    if element_spec is None:
        return batch
    return tf.nest.map_structure(lambda t, spec: tf.ensure_shape(t, spec.shape), batch, element_spec)
