"""PredictFns (the protocol of `tfdet.evaluation.evaluator`) from Keras models, checkpoints and SavedModels,
and the checkpoint watcher behind `--watch`.

Checkpoints are either TensorFlow object checkpoints (a prefix with `.index` / `.data-*` files, as
`tf.train.Checkpoint` and Keras' BackupAndRestore write them; a folder means its latest) or Keras weight
files (`*.weights.h5`, `*.keras`; a folder without TF checkpoints means its newest one).
"""

import glob
import logging
import os
import time

import tensorflow as tf

log = logging.getLogger(__name__)

_KERAS_SUFFIXES = (".weights.h5", ".keras")


def detector_inputs(inputs):
    """Pipeline model inputs -> what `tfdet.modeling.detectors.Detector.call` reads: images, and
    image_info as the [B, 2] (height, width) of the valid image (the detectors' convention)."""
    out = dict(inputs)
    info = tf.convert_to_tensor(inputs["image_info"])
    if info.shape.rank == 3:
        out["image_info"] = info[:, 2, :]
    return out


def keras_predict_fn(model, jit_compile=False):
    """A PredictFn calling `model(inputs, training=False)` (a tf.function, retraced per input shape)."""
    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def predict(inputs):
        return model(inputs, training=False)

    return lambda inputs: predict(detector_inputs(inputs))


STRATEGIES = ("default", "one_device", "mirrored")


def make_strategy(name):
    """A tf.distribute strategy by flag value: "default" (no distribution), "one_device" (the first GPU,
    else the CPU) or "mirrored" (every local GPU, else the CPUs TF sees)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")


def distributed_predict_fn(strategy, model):
    """A PredictFn running `model` (built under `strategy.scope()`) on every replica of `strategy`.

    Each batch is split into contiguous per-replica slices (a batch that does not divide evenly is padded
    by repeating its last image; those rows are dropped again) and the outputs are gathered back in
    batch order."""
    replicas = strategy.num_replicas_in_sync

    @tf.function(reduce_retracing=True)
    def step(dist_inputs):
        outputs = strategy.run(lambda x: model(x, training=False), args=(dist_inputs,))
        return {k: strategy.gather(v, axis=0) for k, v in outputs.items()}

    def predict(inputs):
        inputs = {k: tf.convert_to_tensor(v) for k, v in detector_inputs(inputs).items()}
        batch = int(inputs["images"].shape[0])
        per = -(-batch // replicas)
        padded = {k: tf.concat([v, tf.repeat(v[-1:], per * replicas - batch, axis=0)], 0) for k, v in inputs.items()}

        def slice_for(ctx):
            r = ctx.replica_id_in_sync_group
            return {k: v[r * per:(r + 1) * per] for k, v in padded.items()}

        outputs = step(strategy.experimental_distribute_values_from_function(slice_for))
        return {k: v[:batch] for k, v in outputs.items()}

    return predict


def _tf_checkpoints(folder):
    state = tf.train.get_checkpoint_state(folder)
    return list(state.all_model_checkpoint_paths) if state else []


def _keras_files(folder):
    files = [f for s in _KERAS_SUFFIXES for f in glob.glob(os.path.join(folder, "*" + s))]
    return sorted(files, key=lambda f: (os.path.getmtime(f), f))


def list_checkpoints(folder):
    """Every checkpoint in a folder, oldest first (TF checkpoints if any, else Keras weight files)."""
    return _tf_checkpoints(folder) or _keras_files(folder)


def resolve_checkpoint(path):
    """A checkpoint path from a file, a TF checkpoint prefix or a folder (its latest checkpoint)."""
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {path} (looked for TF checkpoints and "
                                    f"{'/'.join('*' + s for s in _KERAS_SUFFIXES)} files).")
        return found[-1]
    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    raise FileNotFoundError(f"checkpoint not found: {path}")


def restore(model, checkpoint):
    """Loads `checkpoint` into a built `model`; a checkpoint of another model (config) is a ValueError."""
    path = resolve_checkpoint(checkpoint)
    try:
        if path.endswith(_KERAS_SUFFIXES):
            model.load_weights(path)
        else:
            status = tf.train.Checkpoint(model=model).read(path)
            status.assert_existing_objects_matched().expect_partial()  # bookkeeping (save_counter) may differ
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError, KeyError) as e:
        raise ValueError(f"checkpoint {path} does not fit the model built from the config (a checkpoint of "
                         f"another config?): {str(e).splitlines()[0][:300]}") from None
    log.info("restored %s", path)
    return path


def saved_model_predict_fn(path, signature="serving_default"):
    """A PredictFn calling a SavedModel's signature with the batch entries it names (images, image_info,
    image_id, ...; image_info is passed as the valid (h, w) when the signature wants [B, 2])."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"no SavedModel at {path} (expected {os.path.join(path, 'saved_model.pb')}).")
    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no signature {signature!r}; it has {sorted(loaded.signatures)}.")
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]

    def predict(inputs):
        missing = [k for k in specs if k not in inputs]
        if missing:
            raise ValueError(f"SavedModel {path} signature {signature!r} wants inputs {missing} that the batch "
                             f"lacks (it has {sorted(inputs)}).")
        args = {}
        for name, spec in specs.items():
            value = tf.convert_to_tensor(inputs[name])
            if name == "image_info" and spec.shape.rank == 2 and value.shape.rank == 3:
                value = value[:, 2, :]
            args[name] = tf.cast(value, spec.dtype)
        return fn(**args)

    predict.saved_model = loaded  # keeps the loaded object (and its variables) alive
    return predict


def watch(folder, evaluate_fn, timeout=0.0, poll_seconds=10.0, done=None):
    """Evaluates each checkpoint appearing in `folder`, oldest first, including those already there.

    Args:
      evaluate_fn: called with each checkpoint path.
      timeout: stop after this many seconds without a new checkpoint (0: after the ones present).
      done: optional predicate on a checkpoint path; True stops the watch after evaluating it (e.g. the
        final step).
    Returns:
      the evaluated checkpoint paths, in order.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--watch needs a checkpoint folder; {folder} is not one.")
    seen, evaluated = set(), []
    last_new = time.monotonic()
    while True:
        fresh = [c for c in list_checkpoints(folder) if c not in seen]
        for ckpt in fresh:
            seen.add(ckpt)
            evaluate_fn(ckpt)
            evaluated.append(ckpt)
            if done is not None and done(ckpt):
                return evaluated
        if fresh:
            last_new = time.monotonic()
        elif time.monotonic() - last_new >= timeout:
            return evaluated
        time.sleep(min(poll_seconds, max(timeout, 0.0)))


def checkpoint_step(path):
    """The trailing step number of a checkpoint name (ckpt-1200, model_1200.weights.h5), or -1."""
    base = os.path.basename(path)
    for s in _KERAS_SUFFIXES:
        base = base[:-len(s)] if base.endswith(s) else base
    digits = base[len(base.rstrip("0123456789")):]
    return int(digits) if digits else -1


__all__ = ["checkpoint_step", "detector_inputs", "keras_predict_fn", "list_checkpoints", "resolve_checkpoint",
           "restore", "saved_model_predict_fn", "watch"]
