"""The training input of a `data` config block, as a per-replica tf.data function for
`strategy.distribute_datasets_from_function`.

  source       "shapes" (the embedded synthetic dataset, generated on first use) | "coco" | "tfrecords"
  root         shapes: cache folder (None = tfdet.data.shapes.default_root()); shapes: {param: value}
  train_ann, train_images   coco: the json and the image folder;  tfrecords: prefix of the shards
  resume       "skip" (same batches as an uninterrupted run) | "reseed" (fresh shuffle seeded by the step)
and any field of tfdet.data.pipeline.InputOptions (scale, max_instances, mask_size, ...).
"""

import dataclasses

import ml_collections

from tfdet.data import pipeline

_OPTION_FIELDS = {f.name for f in dataclasses.fields(pipeline.InputOptions)} - {"batch_size", "training", "seed"}
DATA_DEFAULTS = dict(source="shapes", root=None, shapes={}, train_ann="", train_images="", tfrecords="",
                     resume="skip")


class TrainInput:
    """Reads the train split once; `dataset(input_context, start_step)` gives this pipeline's batches
    from global step `start_step` on."""

    def __init__(self, data, batch_size, seed):
        data = data.to_dict() if hasattr(data, "to_dict") else dict(data)
        unknown = set(data) - set(DATA_DEFAULTS) - _OPTION_FIELDS
        if unknown:
            raise ValueError(f"config.data: unknown field(s) {sorted(unknown)}; known: "
                             f"{sorted(set(DATA_DEFAULTS) | _OPTION_FIELDS)}.")
        self.data = ml_collections.ConfigDict({**DATA_DEFAULTS, **data})
        if self.data.resume not in ("skip", "reseed"):
            raise ValueError(f"config.data.resume must be 'skip' or 'reseed', got {self.data.resume!r}.")
        options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in _OPTION_FIELDS}
        self.options = pipeline.InputOptions(batch_size=int(batch_size), training=True, seed=int(seed), **options)
        self.reader, self.prefix = None, None
        source = self.data.source
        if source == "shapes":
            from tfdet.data import coco, shapes

            split = shapes.ensure_shapes(self.data.root, **dict(self.data.shapes))["train"]
            self.reader = coco.CocoReader(split.ann_file, split.image_dir, skip_empty=True,
                                          semantic_dir=split.semantic_dir)
        elif source == "coco":
            from tfdet.data import coco

            self.reader = coco.CocoReader(self.data.train_ann, self.data.train_images, skip_empty=True)
        elif source == "tfrecords":
            from tfdet.data import tfrecords

            self.prefix = self.data.tfrecords
            self.num_images = int(tfrecords.read_metadata(self.prefix)["num_images"])
        else:
            raise ValueError(f"config.data.source must be 'shapes', 'coco' or 'tfrecords', got {source!r}.")
        if self.reader is not None:
            self.num_images = len(self.reader.records)

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
