"""The training input of a `data` config block, as a per-replica tf.data function for
`strategy.distribute_datasets_from_function`.

  source       "shapes" (the embedded synthetic dataset, generated on first use) | "coco" | "tfrecords"
  root         shapes: cache folder (None = tfdet.data.shapes.default_root()); shapes: {param: value}
  train_ann, train_images   coco: the json and the image folder;  tfrecords: prefix of the shards
  check_images coco / shapes: how the reader checks the image files at start-up ("header": cheap, the
               default; "decode": decode every image, slow; see tfdet.data.coco.CocoReader)
  resume       "skip" (same batches as an uninterrupted run) | "reseed" (fresh shuffle seeded by the step)
and any field of tfdet.data.pipeline.InputOptions (scale, max_instances, mask_size, ...).

Everything that can be checked before training is checked when a `TrainInput` is made: the block's
fields and values, the paths (a one-line error naming the path), and the data itself (the reader logs
one summary of what it dropped or repaired, and a data set with nothing usable stops with it).
`check_num_classes` compares the data's categories with the model's class count.
"""

import dataclasses
import logging
import numbers
import os

import ml_collections

from tfdet.data import pipeline
from tfdet.data.report import DataError

log = logging.getLogger(__name__)

_OPTION_FIELDS = {f.name for f in dataclasses.fields(pipeline.InputOptions)} - {"batch_size", "training", "seed"}
DATA_DEFAULTS = dict(source="shapes", root=None, shapes={}, train_ann="", train_images="", tfrecords="",
                     check_images="header", resume="skip")
# Fields of the data block that inference reads and training ignores (converted zoo configs write them):
# the model's class names, the dataset category id of each class, the padding multiple of exported inputs.
INFERENCE_FIELDS = ("class_names", "category_ids", "pad_to_multiple")


def _existing(path, field, kind):
    """`path` if it exists; else FileNotFoundError / ValueError naming config.data.<field>."""
    if not path:
        raise ValueError(f"config.data.{field} is empty: set it to the {kind} (--config.data.{field}=...).")
    if not (os.path.isdir(path) if kind.endswith("folder") else os.path.isfile(path)):
        raise FileNotFoundError(f"config.data.{field}: {kind} not found: {path}")
    return path


class TrainInput:
    """Reads the train split once; `dataset(input_context, start_step)` gives this pipeline's batches
    from global step `start_step` on. `num_images`, `class_names` and `report` (tfdet.data.report: what
    the reader dropped or repaired; None for TFRecords) describe the data."""

    def __init__(self, data, batch_size, seed):
        data = data.to_dict() if hasattr(data, "to_dict") else dict(data)
        unknown = set(data) - set(DATA_DEFAULTS) - _OPTION_FIELDS - set(INFERENCE_FIELDS)
        if unknown:
            raise ValueError(f"config.data: unknown field(s) {sorted(unknown)}; known: "
                             f"{sorted(set(DATA_DEFAULTS) | _OPTION_FIELDS | set(INFERENCE_FIELDS))}.")
        self.data = ml_collections.ConfigDict({**DATA_DEFAULTS, **data})
        if self.data.resume not in ("skip", "reseed"):
            raise ValueError(f"config.data.resume must be 'skip' or 'reseed', got {self.data.resume!r}.")
        if self.data.check_images not in ("header", "decode"):
            raise ValueError(f"config.data.check_images must be 'header' or 'decode', got {self.data.check_images!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"the batch size must be an integer >= 1, got {batch_size!r} (config.train.batch_size).")
        options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in _OPTION_FIELDS}
        try:
            self.options = pipeline.InputOptions(batch_size=int(batch_size), training=True, seed=int(seed), **options)
        except ValueError as e:
            raise ValueError(f"config.data.{e}") from None
        self.reader, self.prefix, self.report = None, None, None
        source = self.data.source
        if source in ("shapes", "coco"):
            from tfdet.data import coco, shapes

            if source == "shapes":
                split = shapes.ensure_shapes(self.data.root, **dict(self.data.shapes))["train"]
                ann_file, image_dir, semantic_dir = split.ann_file, split.image_dir, split.semantic_dir
            else:
                ann_file = _existing(self.data.train_ann, "train_ann", "COCO annotation file")
                image_dir = _existing(self.data.train_images, "train_images", "image folder")
                semantic_dir = None
                if self.options.with_semantic:
                    raise ValueError("config.data.with_semantic needs per-image semantic maps, which only the "
                                     "'shapes' source provides; set it to False for source 'coco'.")
            self.reader = coco.CocoReader(ann_file, image_dir, skip_empty=True, semantic_dir=semantic_dir,
                                          check_images=self.data.check_images)
            self.report = self.reader.report
            self.num_images = len(self.reader.records)
            self.class_names = list(self.reader.class_names)
        elif source == "tfrecords":
            from tfdet.data import tfrecords

            self.prefix = self.data.tfrecords
            if not self.prefix:
                raise ValueError("config.data.tfrecords is empty: set it to the prefix the shards were written "
                                 "under (--config.data.tfrecords=...).")
            meta = tfrecords.read_metadata(self.prefix)
            missing = [p for p in tfrecords.shard_paths(self.prefix, meta["num_shards"]) if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"config.data.tfrecords: {len(missing)} of the {meta['num_shards']} shards "
                                        f"are missing, e.g. {missing[0]}")
            if self.options.mask_size and not meta["with_masks"]:
                raise ValueError(f"config.data.tfrecords: {self.prefix} was written without masks; set "
                                 "config.data.mask_size=0 or write the records with masks.")
            self.num_images = int(meta["num_images"])
            self.class_names = list(meta["class_names"])
            skipped = int(meta.get("skipped_images", 0))
            if not self.num_images:
                raise DataError(f"{self.prefix}: the TFRecords hold no image ({skipped} skipped when they were "
                                "written): nothing to train on.")
            (log.warning if skipped else log.info)("%s: %d images (%d skipped when the records were written).",
                                                   self.prefix, self.num_images, skipped)
        else:
            raise ValueError(f"config.data.source must be 'shapes', 'coco' or 'tfrecords', got {source!r}.")

    def check_num_classes(self, num_classes, field="config.model.num_classes"):
        """Raises ValueError unless the data's category count equals the model's `num_classes` (a class
        index beyond the model's fails at the first step on CPU, and on GPU, where tf.gather does not
        check bounds, may silently train on garbage)."""
        found = len(self.class_names)
        if int(num_classes) != found:
            names = ", ".join(self.class_names[:8]) + (", ..." if found > 8 else "")
            raise ValueError(f"the data has {found} categories ({names}) but {field} is {num_classes}: set "
                             f"--{field}={found}, or train on data with {num_classes} categories.")

    def dataset(self, input_context=None, start_step=0):
        options = self.options
        if start_step and self.data.resume == "reseed":
            options = dataclasses.replace(options, seed=options.seed + int(start_step))
        if self.reader is not None:
            ds = pipeline.from_coco(self.reader, options, input_context)
        else:
            ds = pipeline.from_tfrecords(self.prefix, options, input_context)
        if start_step and self.data.resume == "skip":
            per_pipeline = 1
            if input_context is not None:
                per_pipeline = input_context.num_replicas_in_sync // input_context.num_input_pipelines
            ds = ds.skip(int(start_step) * per_pipeline)
        return ds
