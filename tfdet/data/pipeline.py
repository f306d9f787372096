"""tf.data input: COCO json + images (or TFRecords) -> padded dense batches of static shapes, so that
tf.function, tf.distribute and SavedModel export need no special cases (docs/design.md, Padded tensors).

Each batch is a dict (B = batch size, P = padded image side, M = `max_instances`):

  images        [B, P, P, 3] float32  RGB in [0, 255], not normalized (the model normalizes); zero padding
                                      at the bottom/right. P = `pad_size` or max(scale) rounded up to 32
  image_info    [B, 3, 2] float32     rows: original (h, w), scale (sy, sx) original -> network input,
                                      valid (h, w) of the image inside the padding
  image_id      [B] int64             COCO image id (for evaluation)
  gt_boxes      [B, M, 4] float32     (x1, y1, x2, y2) in network-input pixels; zeros where padded
  gt_classes    [B, M] int32          contiguous class in [0, C); -1 where padded
  gt_is_crowd   [B, M] bool           crowd regions: matching must ignore them, never as positives
  gt_masks      [B, M, S, S] uint8    0/1 mask of each instance cropped to its box at S = `mask_size`
                                      (`augment.crop_masks_to_boxes`: Mask R-CNN targets are RoIAligns of
                                      these crops; 112 x 112 keeps a batch small: M*S*S bytes per image)
  gt_keypoints  [B, M, K, 3] float32  (x, y, v) in network-input pixels (only when the data has keypoints)
  semantic      [B, P/s, P/s] uint8   semantic map at stride s = `semantic_stride` (nearest: the pixel at
                                      the centre of each s x s cell), 255 = ignore/padding (only when
                                      `with_semantic`)

Shapes are static except B of a final partial evaluation batch. Training shuffles (seeded), repeats,
flips and resizes; every random choice comes from a stateless seed (options.seed, element index), so
the same options give the same batches. An image that fails to decode at run time is dropped with a
TensorFlow warning (the reader's `check_images="decode"` names every such file up front; evaluation
finds the dropped ones by their missing image ids). Training never waits forever for a usable image: a
whole pass over the data that yields none stops the input with an error.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfdet.data import augment

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """What the pipeline does; the fields map one to one onto a config block."""
    batch_size: int = 2                 # global batch size (split across replicas by input_context)
    training: bool = True               # shuffle, repeat, random flip / scale, drop the last partial batch
    scale: tuple = (1333, 800)          # keep-ratio (long, short) resize; max(scale) caps the long edge
    short_edge_range: tuple = None      # training multi-scale: short edge drawn from [lo, hi], e.g. (400, 1400)
    flip_prob: float = 0.5              # training horizontal flips
    max_instances: int = 100            # M; extra instances are dropped
    mask_size: int = 112                # S of gt_masks; 0 = no masks
    with_keypoints: bool = True         # gt_keypoints when the data has keypoints
    with_semantic: bool = False         # semantic maps (HTC)
    semantic_stride: int = 8
    pad_size: tuple = None              # (h, w), multiples of 32; None = square of max(scale) rounded up to 32
    size_rule: str = "round"            # resized sizes: "round" (tfdet's) | "torchvision" (floor, float64)
    shuffle_buffer: int = 1024
    seed: int = 0

    def __post_init__(self):
        """Checks every field, so that a bad value fails here with its name rather than later inside TF."""
        def check(field, ok, want):
            if not ok(getattr(self, field)):
                raise ValueError(f"{field} must be {want}, got {getattr(self, field)!r}.")

        check("batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        check("scale", lambda v: _is_pair(v, 1), "(long, short) integer sizes >= 1, e.g. (1333, 800)")
        check("short_edge_range", lambda v: v is None or (_is_pair(v, 1) and v[0] <= v[1]),
              "None or (low, high) integer sizes with 1 <= low <= high")
        check("flip_prob", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
              "a probability in [0, 1]")
        check("max_instances", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        check("mask_size", lambda v: _is_int(v) and (v == 0 or v >= 2), "0 (no masks) or an integer >= 2")
        check("semantic_stride", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        check("shuffle_buffer", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        check("seed", _is_int, "an integer")
        check("size_rule", lambda v: v in augment.SIZE_RULES, f"one of {augment.SIZE_RULES}")
        check("pad_size", lambda v: v is None or (_is_pair(v, 32) and v[0] % 32 == 0 and v[1] % 32 == 0
                                                  and min(v) >= max(self.scale)),
              f"None or (h, w) multiples of 32 holding any image whose long edge is max(scale) = "
              f"{max(self.scale)} in either orientation")

    def padded_size(self):
        if self.pad_size is not None:
            return int(self.pad_size[0]), int(self.pad_size[1])
        side = -(-max(self.scale) // 32) * 32
        return side, side


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_pair(value, minimum):
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v >= minimum for v in value)


def from_coco(reader, options, input_context=None):
    """Batches from a `tfdet.data.coco.CocoReader` (images decoded by TF, masks by pycocotools)."""
    records = reader.records
    with_masks = options.mask_size > 0
    k = reader.num_keypoints if options.with_keypoints else 0
    if options.with_semantic and any(not r.semantic_file for r in records):
        raise ValueError("with_semantic needs the reader's semantic_dir.")

    def annotations(index):
        rec = records[int(index)]
        n = min(rec.num_instances, options.max_instances)
        masks = reader.load_masks(rec)[:n] if with_masks else np.zeros((n, 0, 0), np.uint8)
        return (rec.boxes[:n], rec.classes[:n], rec.is_crowd[:n], rec.keypoints[:n, :k], masks)

    def load(index, file_name, semantic_file, image_id):
        boxes, classes, crowd, kps, masks = tf.numpy_function(
            annotations, [index], [tf.float32, tf.int32, tf.bool, tf.float32, tf.uint8], stateful=False)
        ex = {"image": _decode_image(tf.io.read_file(file_name)), "image_id": image_id,
              "boxes": tf.ensure_shape(boxes, [None, 4]), "classes": tf.ensure_shape(classes, [None]),
              "is_crowd": tf.ensure_shape(crowd, [None]), "keypoints": tf.ensure_shape(kps, [None, k, 3])}
        if with_masks:
            ex["masks"] = tf.ensure_shape(masks, [None, None, None])
        if options.with_semantic:
            ex["semantic"] = tf.io.decode_png(tf.io.read_file(semantic_file), channels=1)[..., 0]
        return ex

    source = tf.data.Dataset.from_tensor_slices((
        np.arange(len(records), dtype=np.int64), [r.file_name for r in records],
        [r.semantic_file for r in records], np.array([r.image_id for r in records], np.int64)))
    return build(source, load, options, reader.keypoint_flip_map if k else None, input_context)


def from_tfrecords(prefix, options, input_context=None):
    """Batches from the shards `tfdet.data.tfrecords.write_tfrecords` wrote under `prefix` (records are
    sharded across input pipelines; files are read interleaved)."""
    from tfdet.data import tfrecords

    meta = tfrecords.read_metadata(prefix)
    with_masks = options.mask_size > 0
    if with_masks and not meta["with_masks"]:
        raise ValueError(f"{prefix}: the TFRecords were written without masks; set mask_size=0.")
    k = len(meta["keypoint_names"])
    files = tfrecords.shard_paths(prefix, meta["num_shards"])
    source = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=AUTOTUNE, deterministic=True)

    def load(serialized):
        ex = tfrecords.parse_example(serialized, k, with_masks, options.with_semantic)
        if not options.with_keypoints:
            ex["keypoints"] = ex["keypoints"][:, :0]
        return _truncate(ex, options.max_instances)

    flip_map = meta["keypoint_flip_map"] if k and options.with_keypoints else None
    return build(source, load, options, flip_map, input_context)


def _decode_image(data):
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def build(source, load, options, flip_map=None, input_context=None):
    """The shared pipeline: `source` elements (cheap: indices, file names, serialized records) are
    sharded, shuffled and repeated, then `load(*element)` decodes each into an example dict (see
    `tfdet.data.augment`; full-image `masks`), which is augmented, padded and batched."""
    batch_size = options.batch_size
    if input_context is not None:
        source = source.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if options.training:
        source = source.shuffle(options.shuffle_buffer, seed=options.seed, reshuffle_each_iteration=True)
    ds = source.map(lambda *e: load(*e), num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    if options.training:
        # Repeating after the errors are dropped: tf.data ends a repeat whose pass yields nothing, where
        # repeating the source would make ignore_errors drop undecodable images forever.
        ds = _fail_at_end(ds.repeat(), "the input pipeline went through the whole data set without one image "
                          "that decodes (each failure is logged above): nothing to train on.")
    ds = ds.enumerate().map(lambda i, ex: _prepare(ex, i, options, flip_map), num_parallel_calls=AUTOTUNE,
                            deterministic=True)
    return ds.batch(batch_size, drop_remainder=options.training, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _fail_at_end(ds, message):
    """`ds` followed by one element whose computation fails with InvalidArgumentError(message)."""
    def fail(_):
        check = tf.debugging.Assert(False, [message])
        with tf.control_dependencies([check]):
            return tf.nest.map_structure(lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), ds.element_spec)

    return ds.concatenate(tf.data.Dataset.range(1).map(fail))


def _prepare(ex, index, options, flip_map):
    """Crop masks to boxes, augment, pad, and lay out one example as a batch element."""
    ex = dict(ex)
    original = tf.cast(tf.shape(ex["image"])[:2], tf.float32)
    ex = _truncate(ex, options.max_instances)
    if "masks" in ex:
        ex["box_masks"] = augment.crop_masks_to_boxes(ex.pop("masks"), ex["boxes"], options.mask_size)
    flip_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(options.seed, tf.int64), index]), 2))
    if options.training and options.flip_prob > 0:
        ex = augment.random_flip(ex, flip_seed, options.flip_prob, flip_map)
    if options.training and options.short_edge_range:
        ex = augment.random_resize(ex, scale_seed, options.short_edge_range, max(options.scale), options.size_rule)
    else:
        ex = augment.resize_to_scale(ex, options.scale, options.size_rule)
    ex = augment.pad_to_size(ex, options.padded_size())
    m = options.max_instances
    n = tf.shape(ex["classes"])[0]
    pad = lambda t, value=0: _pad_first(t, m - n, m, value)  # noqa: E731
    out = {
        "images": ex["image"],
        "image_info": tf.stack([original, ex["scale"], tf.cast(ex["valid_size"], tf.float32)]),
        "image_id": tf.cast(ex["image_id"], tf.int64),
        "gt_boxes": pad(ex["boxes"]),
        "gt_classes": pad(ex["classes"], -1),
        "gt_is_crowd": pad(ex["is_crowd"], False),
    }
    if "box_masks" in ex:
        out["gt_masks"] = pad(ex["box_masks"])
    if ex["keypoints"].shape[1]:
        out["gt_keypoints"] = pad(ex["keypoints"])
    if "semantic" in ex:
        s = options.semantic_stride
        out["semantic"] = ex["semantic"][s // 2::s, s // 2::s]
    return out


def _truncate(ex, m):
    for key in ("boxes", "classes", "is_crowd", "keypoints", "masks"):
        if key in ex:
            ex[key] = ex[key][:m]
    return ex


def _pad_first(tensor, amount, total, value):
    paddings = [[0, amount]] + [[0, 0]] * (tensor.shape.rank - 1)
    out = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
    out.set_shape([total] + tensor.shape.as_list()[1:])
    return out
