"""Reading source checkpoints and writing converted ones (bin/convert.py): a folder with config.py (the
tfdet config that reproduces the source model) and a tfdet.engine.checkpoint checkpoint, written to a
temporary folder and renamed at the end, so that a failure leaves nothing behind."""

import os
import pprint
import shutil
import tempfile

from tfdet.modeling.backbones.weights import read_state_dict

CONFIG_TEMPLATE = '''"""tfdet config of torchvision {arch}, written by bin/convert.py from {source}."""

import os

from tfdet.zoo import torchvision


def get_config(arg=None):
    if arg:
        raise ValueError("this converted config takes no argument; override fields with --config.x.y=...")
    config = torchvision.tfdet_config({arch!r}, num_classes={num_classes!r}, classes={classes!r})
    config.train.init_checkpoint = os.path.dirname(os.path.abspath(__file__))  # bin/train.py fine-tunes from here
    return config
'''


MMDET_CONFIG_TEMPLATE = '''"""tfdet config of mmdetection {arch}, written by bin/convert.py from {source}.

SPEC describes the mmdetection model (tfdet.zoo.mmdet docstring); tfdet.zoo.mmdet.tfdet_config turns it
into the tfdet config that reproduces it."""

import os

from tfdet.zoo import mmdet

SPEC = {spec}


def get_config(arg=None):
    if arg:
        raise ValueError("this converted config takes no argument; override fields with --config.x.y=...")
    config = mmdet.tfdet_config(SPEC, num_classes={num_classes!r}, classes={classes!r})
    config.train.init_checkpoint = os.path.dirname(os.path.abspath(__file__))  # bin/train.py fine-tunes from here
    return config
'''


def load_state_dict(path):
    """{key: array} of a checkpoint file: .npz (numpy only) or .pth / .pt (needs torch; a dict holding the
    state dict under "model" or "state_dict" is unwrapped): tfdet.modeling.backbones.weights.read_state_dict,
    with --checkpoint's errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file.")
    try:
        return read_state_dict(path)
    except ImportError as err:
        raise ValueError(f"--checkpoint {path}: {err} (bin/convert.py --help)") from None


def prepare_out(out):
    """A temporary folder next to `out` (which must not exist or be empty) to write into."""
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; choose a new folder (nothing "
                              "already there is overwritten).")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.converting-", dir=parent)


def finish_out(tmp, out):
    """Moves the finished temporary folder to `out`."""
    out = os.path.abspath(out)
    if os.path.isdir(out):
        os.rmdir(out)  # empty (prepare_out checked)
    os.rename(tmp, out)


def write_checkpoint(model, folder):
    """A tfdet.engine.checkpoint checkpoint of `model` in `folder` (restore(model, folder) loads it)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfdet.engine.checkpoint import weights_by_path  # pylint: disable=import-outside-toplevel

    checkpoint = tf.train.Checkpoint(model=model, weights=weights_by_path(model))
    return tf.train.CheckpointManager(checkpoint, folder, max_to_keep=1, checkpoint_name="ckpt").save()


def load_weights(model, weights, keep=()):
    """Assigns {weight path: array} to a built model; every weight of the model must be given, in its shape,
    but those whose path starts with one of `keep` (left at their initial values)."""
    from tfdet.engine.checkpoint import weights_by_path  # pylint: disable=import-outside-toplevel

    variables = weights_by_path(model)
    missing = sorted(k for k in set(variables) - set(weights) if not k.startswith(tuple(keep)))
    extra = sorted(set(weights) - set(variables))
    misshaped = sorted(k for k in set(variables) & set(weights) if tuple(variables[k].shape) != weights[k].shape)
    if missing or extra or misshaped:
        raise ValueError(f"converted weights do not fit the model: missing {missing}, unexpected {extra}, "
                         f"mis-shaped {misshaped}")
    for path, value in weights.items():
        variables[path].assign(value)


def convert_torchvision(checkpoint, out, arch=None, num_classes=None, classes=None):
    """Converts torchvision `checkpoint` into `out`/config.py and `out`/checkpoint; returns the arch. With
    `num_classes` (object classes) other than the source's, the class-specific layers are re-initialized
    (tfdet's initializers) and everything else is loaded: a starting point for fine-tuning. With `classes`
    (source category ids or class names, tfdet.zoo.classes.class_indices), the model keeps those classes,
    in that order, their rows of the class layers loaded."""
    from tfdet.modeling.detectors import build_detector  # pylint: disable=import-outside-toplevel
    from tfdet.zoo import torchvision  # pylint: disable=import-outside-toplevel
    from tfdet.zoo.classes import class_indices  # pylint: disable=import-outside-toplevel

    if classes is not None and num_classes is not None:
        raise ValueError("give --num_classes (other categories) or --classes (a subset of the source's), not both.")
    state_dict = load_state_dict(checkpoint)
    arch = arch or torchvision.detect_arch(state_dict)
    keep = None if classes is None else class_indices(classes, *torchvision.source_classes(arch))
    weights = torchvision.convert(state_dict, arch, num_classes=num_classes, classes=keep)
    model = build_detector(torchvision.tfdet_config(arch, num_classes=num_classes, classes=keep).model)
    load_weights(model, weights, keep=torchvision.CLASS_LAYERS if num_classes is not None else ())
    write_out(out, CONFIG_TEMPLATE.format(arch=arch, source=os.path.basename(checkpoint), num_classes=num_classes,
                                         classes=keep), model)
    return arch


def write_out(out, config_text, model):
    """`out`/config.py holding `config_text` and `out`/checkpoint of `model`, all or nothing."""
    tmp = prepare_out(out)
    try:
        with open(os.path.join(tmp, "config.py"), "w", encoding="utf-8") as f:
            f.write(config_text)
        write_checkpoint(model, tmp)
        finish_out(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_mmdet(checkpoint, out, arch=None, num_classes=None, classes=None):
    """Converts mmdetection `checkpoint` (.pth, or .npz with its meta in __meta__) into `out`/config.py and
    `out`/checkpoint; returns the spec (tfdet.zoo.mmdet). The architecture comes from the checkpoint's
    config text, else from `arch`. `num_classes` and `classes` as convert_torchvision's."""
    from tfdet.modeling.detectors import build_detector  # pylint: disable=import-outside-toplevel
    from tfdet.zoo import mmdet  # pylint: disable=import-outside-toplevel
    from tfdet.zoo.classes import class_indices  # pylint: disable=import-outside-toplevel

    if classes is not None and num_classes is not None:
        raise ValueError("give --num_classes (other categories) or --classes (a subset of the source's), not both.")
    state_dict, meta = mmdet.read_checkpoint(checkpoint)
    spec = mmdet.describe(meta, arch=arch, state_dict=state_dict)
    keep = None if classes is None else class_indices(classes, *mmdet.source_classes(spec))
    weights = mmdet.convert(state_dict, spec, num_classes=num_classes, classes=keep)
    model = build_detector(mmdet.tfdet_config(spec, num_classes=num_classes, classes=keep).model)
    reinit = num_classes is not None and int(num_classes) != spec["num_classes"]
    load_weights(model, weights, keep=mmdet.class_layers(spec) if reinit else ())
    text = MMDET_CONFIG_TEMPLATE.format(arch=spec["arch"], source=os.path.basename(checkpoint),
                                        spec=pprint.pformat(spec, width=110, sort_dicts=False), num_classes=num_classes,
                                        classes=keep)
    write_out(out, text, model)
    return spec
