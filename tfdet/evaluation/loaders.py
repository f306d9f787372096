"""PredictFns (the protocol of `tfdet.evaluation.evaluator`) from Keras models and SavedModels (a tfdet
export, bin/export.py, gives a `ServingPredictFn` instead: images in as a client sends them), and the
checkpoint watcher behind `--watch` (checkpoints are found and restored by tfdet.engine.checkpoint).
"""

import logging
import os
import time

import tensorflow as tf

from tfdet.engine.checkpoint import KERAS_SUFFIXES, list_checkpoints

log = logging.getLogger(__name__)

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


SERVING_KINDS = ("encoded_image", "image_tensor")  # tfdet.serving.module's input types, preferred first
SERVING_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes", "image_size")


def signature_kind(fn):
    """What a SavedModel signature takes: "encoded_image" (encoded_images string [B]) or "image_tensor"
    (images uint8 [B, H, W, 3]) for a tfdet.serving export (bin/export.py; it must also return its
    outputs, `SERVING_OUTPUTS`), "pipeline" for one taking the PredictFn inputs (images, image_info, ...),
    else None."""
    specs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs if isinstance(fn.structured_outputs, dict) else {}
    serving = all(k in outputs for k in SERVING_OUTPUTS)
    if set(specs) == {"encoded_images"} and specs["encoded_images"].dtype == tf.string and serving:
        return "encoded_image"
    if (set(specs) == {"images"} and specs["images"].dtype == tf.uint8 and specs["images"].shape.rank == 4
            and serving):
        return "image_tensor"
    if "images" in specs and "image_info" in specs:
        return "pipeline"
    return None


def _describe(fn):
    specs = fn.structured_input_signature[1]
    return ", ".join(f"{k}: {v.dtype.name} {v.shape}" for k, v in sorted(specs.items())) or "no inputs"


class ServingPredictFn:
    """A tfdet.serving export (bin/export.py) through one signature: images go in as a client sends them
    (`kind` "encoded_image": a list of encoded files' bytes; "image_tensor": one uint8 [H, W, 3] image per
    call) and the outputs come back as NumPy arrays, in original-image pixels with dataset category ids
    (tfdet.serving.module), for `tfdet.evaluation.results.serving_to_coco`."""

    def __init__(self, path, loaded, signature, kind):
        self.path, self.saved_model, self.signature, self.kind = path, loaded, signature, kind
        self.fn = loaded.signatures[signature]
        self.input_shape = self.fn.structured_input_signature[1]["encoded_images" if kind == "encoded_image"
                                                                 else "images"].shape

    def __call__(self, images):
        if self.kind == "encoded_image":
            outputs = self.fn(encoded_images=tf.constant(list(images), tf.string))
        else:
            image = tf.convert_to_tensor(images, tf.uint8)
            if not self.input_shape[1:3].is_compatible_with(image.shape[:2]):
                raise ValueError(f"SavedModel {self.path} signature {self.signature!r} takes only "
                                 f"{self.input_shape[1]}x{self.input_shape[2]} images (a fixed --input_size), got "
                                 f"{image.shape[0]}x{image.shape[1]}: export it with --input_type=encoded_image (or "
                                 "without --input_size) to evaluate it on this set.")
            outputs = self.fn(images=image[None])
        return {k: v.numpy() for k, v in outputs.items()}


def saved_model_predict_fn(path, signature=None):
    """A predictor of the SavedModel at `path`, through `signature` (default: the first usable one, see
    `signature_kind`: a tfdet export's encoded_image signature, so that the export's own decode, resize,
    padding and mask pasting are what gets evaluated, else its image_tensor one, else a signature taking
    the PredictFn inputs).

    For a tfdet export: a `ServingPredictFn` (tfdet.evaluation.runner sends it the image files). For a
    PredictFn-style signature: a PredictFn calling it with the batch entries it names (images, image_info,
    image_id, ...; image_info is passed as the valid (h, w) when the signature wants [B, 2])."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"no SavedModel at {path} (expected {os.path.join(path, 'saved_model.pb')}; give "
                                "a version folder of bin/export.py's export_dir, e.g. export/1).")
    loaded = tf.saved_model.load(path)
    kinds = {name: signature_kind(fn) for name, fn in loaded.signatures.items()}
    if signature is not None:
        if signature not in loaded.signatures:
            raise ValueError(f"SavedModel {path} has no signature {signature!r}; it has {sorted(loaded.signatures)}.")
        usable = [signature] if kinds[signature] else []
    else:
        order = SERVING_KINDS + ("pipeline",)
        # serving_default first among signatures of one kind (it is one of the named ones in an export)
        usable = sorted((n for n, k in kinds.items() if k),
                        key=lambda n: (order.index(kinds[n]), n != "serving_default"))
    if not usable:
        found = "; ".join(f"{n} ({_describe(loaded.signatures[n])})" for n in sorted(loaded.signatures)) or "none"
        raise ValueError(f"SavedModel {path} has no signature evaluation can call (signatures: {found}). It needs "
                         "a tfdet export's encoded_image signature (encoded_images: string [B]) or image_tensor "
                         "signature (images: uint8 [B, H, W, 3]) returning " + ", ".join(SERVING_OUTPUTS) +
                         " (bin/export.py writes both), or one taking the evaluation pipeline's images and "
                         "image_info.")
    signature = usable[0]
    if kinds[signature] in SERVING_KINDS:
        return ServingPredictFn(path, loaded, signature, kinds[signature])
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
    for s in KERAS_SUFFIXES:
        base = base[:-len(s)] if base.endswith(s) else base
    digits = base[len(base.rstrip("0123456789")):]
    return int(digits) if digits else -1


__all__ = ["ServingPredictFn", "checkpoint_step", "detector_inputs", "distributed_predict_fn",
           "keras_predict_fn", "saved_model_predict_fn", "signature_kind", "watch"]
