"""Sharded TFRecords of a COCO dataset, for inputs too large to decode masks from json on the fly.

`write_tfrecords(reader, prefix, num_shards)` writes `prefix-00000-of-0000N.tfrecord`, ... and
`prefix.meta.json` (class names and category ids, keypoint names and flip map). Image i goes to shard
i % N. Every file is written under a temporary name and renamed, so a killed conversion leaves no
truncated shard under a final name. Images that do not decode (or whose size disagrees with the json)
are skipped, counted by reason in one logged summary naming the first few files, and their number is
returned and kept in the metadata (`skipped_images`).

One tf.train.Example per image:
  image/encoded     bytes   the original file's bytes (PNG/JPEG/...)
  image/id, image/height, image/width      int64
  image/filename    bytes
  image/semantic    bytes   PNG semantic map, or empty
  object/bbox       float   [N * 4] (x1, y1, x2, y2), original pixels
  object/class      int64   [N] contiguous classes
  object/is_crowd   int64   [N]
  object/keypoints  float   [N * K * 3] (x, y, v), continuous coordinates as the reader gives them
  object/mask       bytes   [N] PNG-encoded full-image 0/1 masks (only with masks)
  object/ann_id     int64   [N]

`parse_example` turns one back into the example dict the pipeline and `tfdet.data.augment` use.
"""

import json
import os

import numpy as np
import tensorflow as tf

from tfdet.data.report import DataReport


def shard_paths(prefix, num_shards):
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def _feature(values, kind):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).reshape(-1)))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).reshape(-1)))


def serialize_record(reader, record, with_masks=True):
    """Serialized tf.train.Example of one `ImageRecord`; raises ValueError for an unusable image."""
    with open(record.file_name, "rb") as f:
        encoded = f.read()
    try:
        shape = tf.io.decode_image(encoded, channels=3, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise ValueError(f"cannot be decoded ({e.message.splitlines()[0]})") from None
    if tuple(shape[:2]) != (record.height, record.width):
        raise ValueError(f"size differs from the json's ({shape[0]}x{shape[1]}, not {record.height}x{record.width})")
    semantic = b""
    if record.semantic_file:
        with open(record.semantic_file, "rb") as f:
            semantic = f.read()
    features = {
        "image/encoded": _feature([encoded], "bytes"),
        "image/id": _feature([record.image_id], "int"),
        "image/height": _feature([record.height], "int"),
        "image/width": _feature([record.width], "int"),
        "image/filename": _feature([os.path.basename(record.file_name).encode()], "bytes"),
        "image/semantic": _feature([semantic], "bytes"),
        "object/bbox": _feature(record.boxes, "float"),
        "object/class": _feature(record.classes, "int"),
        "object/is_crowd": _feature(record.is_crowd, "int"),
        "object/keypoints": _feature(record.keypoints, "float"),
        "object/ann_id": _feature(record.ann_ids, "int"),
    }
    if with_masks:
        masks = reader.load_masks(record)
        features["object/mask"] = _feature([tf.io.encode_png(m[..., None]).numpy() for m in masks], "bytes")
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_tfrecords(reader, prefix, num_shards=1, with_masks=True):
    """Converts a `CocoReader`'s dataset; returns (shard paths, number of images skipped)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    paths = shard_paths(prefix, num_shards)
    temps = [f"{p}.tmp-{os.getpid()}" for p in paths]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    report = DataReport(f"{prefix} (TFRecords of {len(reader.records)} images)")
    try:
        for i, record in enumerate(reader.records):
            try:
                data = serialize_record(reader, record, with_masks)
            except (OSError, ValueError) as e:
                report.add("skipped_images", str(e).split(" (")[0], f"image id {record.image_id} ({record.file_name})")
                continue
            writers[i % num_shards].write(data)
        for w in writers:
            w.close()
        skipped = report.counts["skipped_images"]
        meta = {"class_names": reader.class_names, "category_ids": reader.category_ids,
                "keypoint_names": reader.keypoint_names,
                "keypoint_flip_map": [int(v) for v in reader.keypoint_flip_map],
                "with_masks": bool(with_masks), "num_shards": num_shards,
                "num_images": len(reader.records) - skipped, "skipped_images": skipped}
        with open(f"{prefix}.meta.json.tmp-{os.getpid()}", "w") as f:
            json.dump(meta, f, indent=1)
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
        os.replace(f"{prefix}.meta.json.tmp-{os.getpid()}", f"{prefix}.meta.json")
    finally:
        for w, temp in zip(writers, temps):
            w.close()
            if os.path.exists(temp):
                os.remove(temp)
    report.images, report.usable = len(reader.records), len(reader.records) - skipped
    report.log()
    return paths, skipped


def read_metadata(prefix):
    path = f"{prefix}.meta.json"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TFRecord metadata not found: {path} (write it with write_tfrecords).")
    with open(path) as f:
        return json.load(f)


def parse_example(serialized, num_keypoints, with_masks=True, with_semantic=False):
    """The example dict of one serialized record: image uint8 [H, W, 3], image_id, boxes [N, 4],
    classes [N] int32, is_crowd [N] bool, keypoints [N, K, 3], masks [N, H, W] uint8 (with_masks),
    semantic [H, W] uint8 (with_semantic)."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.int64),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/semantic": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "object/bbox": tf.io.VarLenFeature(tf.float32),
        "object/class": tf.io.VarLenFeature(tf.int64),
        "object/is_crowd": tf.io.VarLenFeature(tf.int64),
        "object/keypoints": tf.io.VarLenFeature(tf.float32),
        "object/mask": tf.io.VarLenFeature(tf.string),
    }
    f = tf.io.parse_single_example(serialized, spec)
    dense = lambda key: tf.sparse.to_dense(f[key])  # noqa: E731
    image = tf.io.decode_image(f["image/encoded"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    classes = tf.cast(dense("object/class"), tf.int32)
    ex = {
        "image": image,
        "image_id": f["image/id"],
        "boxes": tf.reshape(dense("object/bbox"), [-1, 4]),
        "classes": classes,
        "is_crowd": dense("object/is_crowd") > 0,
        "keypoints": tf.reshape(dense("object/keypoints"), [tf.size(classes), num_keypoints, 3]),
    }
    if with_masks:
        h, w = tf.cast(f["image/height"], tf.int32), tf.cast(f["image/width"], tf.int32)
        pngs = dense("object/mask")
        masks = tf.cond(  # map_fn cannot stack zero elements of unknown shape
            tf.size(pngs) > 0,
            lambda: tf.map_fn(lambda png: tf.io.decode_png(png, channels=1)[..., 0], pngs,
                              fn_output_signature=tf.TensorSpec([None, None], tf.uint8)),
            lambda: tf.zeros([0, h, w], tf.uint8))
        ex["masks"] = tf.reshape(masks, [tf.size(pngs), h, w])
    if with_semantic:
        ex["semantic"] = tf.io.decode_png(f["image/semantic"], channels=1)[..., 0]
    return ex
