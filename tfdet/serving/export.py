"""Writing a detector as a versioned SavedModel for TF Serving.

    export_dir/
      <version>/saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests

The SavedModel is written into a temporary sibling folder and renamed into `export_dir/<version>` only
when complete (rename within one filesystem is atomic), so a failed export never leaves a half-written
version that a server watching `export_dir` would pick up.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tfdet.engine.preflight import check_no_file_in_the_way
from tfdet.serving import warmup
from tfdet.serving.module import INPUT_TYPES, ServingModule


def build_serving_model(config, ops="composite", checkpoint=None):
    """The detector of a full config (`config.model`) with `ops_impl=ops`, built, weights restored."""
    from tfdet.engine.checkpoint import restore
    from tfdet.modeling.detectors import build_detector

    if ops not in ("composite", "fused"):
        raise ValueError(f"ops must be 'composite' or 'fused', got {ops!r}.")
    model_config = config.model.copy_and_resolve_references()
    model_config.ops_impl = ops
    model = build_detector(model_config)
    if checkpoint:
        try:
            restore(model, checkpoint)
        except FileNotFoundError:  # its message names what is missing
            raise
        except (OSError, tf.errors.OpError) as err:  # a damaged file: name it (the reader's message does not)
            reason = " ".join(str(getattr(err, "message", None) or err).split())[:300]
            raise OSError(f"cannot read the checkpoint {checkpoint} ({reason}); give an intact one (a training "
                          "folder, a ckpt-N prefix, a .weights.h5 or .keras file).") from None
    return model


def next_version(export_dir):
    """1 + the largest integer subfolder of `export_dir` (1 when there is none)."""
    versions = [int(n) for n in (os.listdir(export_dir) if os.path.isdir(export_dir) else []) if n.isdigit()]
    return max(versions, default=0) + 1


def check_target(export_dir, version=None):
    """The version an export into `export_dir` would write (`version`, default the next free one), checked
    before any work: raises NotADirectoryError when `export_dir` (or a parent) is a file, ValueError for a
    negative version, FileExistsError when that version exists (TF Serving versions are immutable)."""
    check_no_file_in_the_way(export_dir, "--export_dir")
    version = next_version(export_dir) if version is None else int(version)
    if version < 0:
        raise ValueError(f"the version must be >= 0, got {version}.")
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; pick another --version (TF Serving versions are immutable) or "
                              "leave --version out to write the next free one.")
    return version


def warmup_images(module, input_type, batch=1):
    """A small request for the warm-up file: gray images (tensor) or their PNG bytes (encoded)."""
    long, short = module.scale
    image = np.full((batch, short, long, 3), 114, np.uint8)
    spec = module.image_tensor.input_signature[0]
    if input_type == "image_tensor" and spec.shape[1] is not None:
        image = np.full((batch, spec.shape[1], spec.shape[2], 3), 114, np.uint8)
    if input_type == "image_tensor":
        return {"images": image}
    return {"encoded_images": np.array([tf.io.encode_png(im).numpy() for im in image], object)}


def export(module, export_dir, version=None, input_types=INPUT_TYPES, model_name="tfdet", with_warmup=True):
    """Saves `module` (a ServingModule) as `export_dir/<version>`; returns that path.

    version: an int (default: the next free one). Fails as `check_target` says."""
    if not isinstance(module, ServingModule):
        raise TypeError(f"export wants a tfdet.serving.ServingModule, got {type(module).__name__}.")
    version = check_target(export_dir, version)
    final = os.path.join(export_dir, str(version))
    os.makedirs(export_dir, exist_ok=True)
    signatures = module.signatures(tuple(input_types))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        if with_warmup:
            requests = [(name, warmup_images(module, name)) for name in input_types]
            warmup.write_warmup_file(os.path.join(tmp, "assets.extra", warmup.WARMUP_FILE), requests,
                                     model_name=model_name)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
