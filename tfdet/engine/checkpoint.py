"""Complete checkpoints of Keras 3 models.

tf.train.Checkpoint follows attributes: a Keras 3 (TF backend) model that keeps layers in a Python list
(`self.convs = [...]`) has those layers' variables missing from `Checkpoint(model=model)`, and a restore
of such a checkpoint reports success while leaving them at their initial values. The engine therefore
also saves every model weight keyed by its Keras path below the model's name (`weights/conv0/kernel`);
restoring by path is what `restore_weights` does. Paths are stable for the same config and code in a
fresh process (auto-numbered layer names, e.g. `conv2d_3`, can differ between two models built in one
process: give layers explicit names).
"""

import glob
import logging
import os
import re

import tensorflow as tf

log = logging.getLogger(__name__)


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
    weights = weights_by_path(model)
    stored = {name.split("/")[1].replace(".S", "/") for name, _ in tf.train.list_variables(path)
              if name.startswith("weights/")}
    status = tf.train.Checkpoint(weights=_earlier_names(weights, stored, path)).read(path)
    status.assert_existing_objects_matched().expect_partial()
    return path


_CARAFE_EARLIER = re.compile(r"^(.*?)/carafe_upsample(?:_(\d+))?/(.*)$")


def _earlier_names(weights, stored, path):
    """`weights` keyed as the checkpoint at `path` stores them. Checkpoints written before CARAFE
    upsamplers got names by place (`fpn/upsample{level}`, `<mask head>/upsample`) hold them under Keras's
    creation-order names (`fpn/carafe_upsample_3`, ...): within each parent layer those sort in the order
    the upsamplers are created (FPN levels ascending, one per mask head), which gives the mapping."""
    if not any("/carafe_upsample" in key for key in stored) or set(weights) <= stored:
        return weights
    earlier = {}  # parent -> sorted creation numbers
    for key in stored:
        match = _CARAFE_EARLIER.match(key)
        if match:
            earlier.setdefault(match.group(1), set()).add(int(match.group(2) or 0))
    current = {}  # parent -> the upsample layer names of today's model, in creation order
    for key in weights:
        parent, _, rest = key.partition("/")
        layer = rest.split("/")[0]
        if parent in earlier and re.fullmatch(r"upsample\d*", layer) and "channel_compressor" in rest:
            current.setdefault(parent, set()).add(layer)
    renames = {}
    for parent, layers in current.items():
        layers = sorted(layers, key=lambda name: int(name[len("upsample"):] or 0))
        numbers = sorted(earlier[parent])
        if len(numbers) != len(layers):
            return weights  # not the same model: let the restore report what is missing
        for layer, number in zip(layers, numbers):
            renames[f"{parent}/{layer}/"] = f"{parent}/carafe_upsample{'_%d' % number if number else ''}/"
    if not renames:
        return weights
    log.warning("checkpoint %s names its CARAFE upsamplers by creation order (written before tfdet named "
                "them by place); restoring them by place: %s", path,
                ", ".join(f"{old[:-1]} -> {new[:-1]}" for new, old in sorted(renames.items())))
    out = {}
    for key, variable in weights.items():
        for new, old in renames.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = variable
    return out


# -- Finding and restoring a checkpoint for evaluation and export ------------------------------------------
# Engine checkpoints (a TF checkpoint prefix with the weights stored by path; a folder means its latest, a
# training workdir its checkpoints/) or Keras weight files (*.weights.h5, *.keras; a folder without TF
# checkpoints means its newest one).

KERAS_SUFFIXES = (".weights.h5", ".keras")


def _tf_checkpoints(folder):
    state = tf.train.get_checkpoint_state(folder)
    return list(state.all_model_checkpoint_paths) if state else []


def _keras_files(folder):
    files = [f for s in KERAS_SUFFIXES for f in glob.glob(os.path.join(folder, "*" + s))]
    return sorted(files, key=lambda f: (os.path.getmtime(f), f))


def list_checkpoints(folder):
    """Every checkpoint in a folder, oldest first (TF checkpoints if any, else Keras weight files)."""
    return _tf_checkpoints(folder) or _keras_files(folder)


def resolve_checkpoint(path):
    """A checkpoint path from a file, a TF checkpoint prefix or a folder (its latest checkpoint; for a
    training workdir, the latest in its checkpoints/ folder)."""
    if os.path.isdir(path):
        if not list_checkpoints(path) and os.path.isdir(os.path.join(path, "checkpoints")):
            path = os.path.join(path, "checkpoints")  # a training workdir (bin/train --workdir)
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {path} (looked for TF checkpoints and "
                                    f"{'/'.join('*' + s for s in KERAS_SUFFIXES)} files).")
        return found[-1]
    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    raise FileNotFoundError(f"checkpoint not found: {path}")


def restore(model, checkpoint):
    """Loads `checkpoint` into a built `model`; a checkpoint of another model (config) is a ValueError."""
    path = resolve_checkpoint(checkpoint)
    try:
        if path.endswith(KERAS_SUFFIXES):
            model.load_weights(path)
        else:
            # By weight path: tf.train.Checkpoint(model=...) does not see layers kept in Python lists
            # in Keras 3 and would "restore" them silently untouched (see the module docstring).
            restore_weights(model, path)
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError, KeyError) as e:
        raise ValueError(f"checkpoint {path} does not fit the model built from the config (a checkpoint of "
                         f"another config?): {str(e).splitlines()[0][:300]}") from None
    log.info("restored %s", path)
    return path
