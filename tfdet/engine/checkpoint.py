"""Complete checkpoints of Keras 3 models.

tf.train.Checkpoint follows attributes: a Keras 3 (TF backend) model that keeps layers in a Python list
(`self.convs = [...]`) has those layers' variables missing from `Checkpoint(model=model)`, and a restore
of such a checkpoint reports success while leaving them at their initial values. The engine therefore
also saves every model weight keyed by its Keras path below the model's name (`weights/conv0/kernel`);
restoring by path is what `restore_weights` does. Paths are stable for the same config and code in a
fresh process (auto-numbered layer names, e.g. `conv2d_3`, can differ between two models built in one
process: give layers explicit names).
"""

import tensorflow as tf


def weights_by_path(model):
    """{path below the model's name: variable} for every weight of `model` (trainable or not)."""
    out, seen = {}, set()
    prefix = model.name + "/"
    for v in model.weights:
        if id(v) in seen:
            continue
        seen.add(id(v))
        key = v.path[len(prefix):] if v.path.startswith(prefix) else v.path
        if key in out:
            raise ValueError(f"two weights of {model.name} share the path {key!r}; name the layers uniquely.")
        out[key] = v
    return out


def training_checkpoint(model, optimizer):
    """The tf.train.Checkpoint the engine writes: model, optimizer (step, slots), weights by path."""
    return tf.train.Checkpoint(model=model, optimizer=optimizer, weights=weights_by_path(model))


def restore_weights(model, path):
    """Loads the model weights of an engine checkpoint `path` into a built `model` (by path; the
    optimizer state is ignored). Raises AssertionError when a weight of the model is not in it."""
    status = tf.train.Checkpoint(weights=weights_by_path(model)).read(path)
    status.assert_existing_objects_matched().expect_partial()
    return path
