"""TFRecords: the round trip equals the json reader, shards are atomic, bad images are skipped."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from tests.data.coco_files import write_coco
from tfdet.data import coco, pipeline, tfrecords


def _shapes_reader(shapes_data):
    paths = shapes_data["train"]
    return coco.CocoReader(paths.ann_file, paths.image_dir, semantic_dir=paths.semantic_dir)


def _parsed(prefix, num_shards, k, with_semantic, with_masks=True):
    ds = tf.data.TFRecordDataset(tfrecords.shard_paths(prefix, num_shards))
    return {int(ex["image_id"]): tf.nest.map_structure(lambda t: t.numpy(), ex)
            for ex in ds.map(lambda s: tfrecords.parse_example(s, k, with_masks, with_semantic))}


def _assert_matches_reader(reader, parsed, with_semantic):
    assert sorted(parsed) == sorted(r.image_id for r in reader.records)
    for rec in reader.records:
        ex = parsed[rec.image_id]
        np.testing.assert_array_equal(ex["image"], tf.io.decode_image(tf.io.read_file(rec.file_name)).numpy())
        np.testing.assert_array_equal(ex["boxes"], rec.boxes)
        np.testing.assert_array_equal(ex["classes"], rec.classes)
        np.testing.assert_array_equal(ex["is_crowd"], rec.is_crowd)
        np.testing.assert_array_equal(ex["keypoints"], rec.keypoints)
        np.testing.assert_array_equal(ex["masks"], reader.load_masks(rec))
        assert ex["masks"].shape == (rec.num_instances, rec.height, rec.width)
        if with_semantic:
            np.testing.assert_array_equal(
                ex["semantic"], tf.io.decode_png(tf.io.read_file(rec.semantic_file))[..., 0].numpy())


def test_round_trip_equals_the_json_reader(shapes_data, tmp_path):
    reader = _shapes_reader(shapes_data)
    prefix = str(tmp_path / "rec" / "train")
    paths, skipped = tfrecords.write_tfrecords(reader, prefix, num_shards=2)
    assert skipped == 0 and paths == [f"{prefix}-00000-of-00002.tfrecord", f"{prefix}-00001-of-00002.tfrecord"]
    assert sorted(os.listdir(tmp_path / "rec")) == sorted(os.path.basename(p) for p in paths) + ["train.meta.json"]
    meta = tfrecords.read_metadata(prefix)
    assert meta["class_names"] == reader.class_names and meta["keypoint_flip_map"] == [0, 2, 1, 3, 4]
    assert meta["num_images"] == len(reader)
    _assert_matches_reader(reader, _parsed(prefix, 2, 5, True), True)


def test_round_trip_with_crowd_rle_empty_and_unlabelled_keypoints(tmp_path):
    names = ["nose", "left_eye", "right_eye"]
    rle = mask_utils.encode(np.asfortranarray((np.random.default_rng(0).random((24, 32)) > 0.5).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    images = [{"id": i, "file_name": f"im{i}.png", "height": 24, "width": 32} for i in (1, 2)]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 32, 24], "iscrowd": 1, "segmentation": rle},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 3, 8, 5], "iscrowd": 0,
             "segmentation": [[2, 3, 10, 3, 10, 8]], "keypoints": [4, 4, 2, 0, 0, 0, 6, 5, 1]}]
    cats = [{"id": 3, "name": "person", "keypoints": names}]
    reader = coco.CocoReader(write_coco(tmp_path, images, anns, cats), str(tmp_path))
    prefix = str(tmp_path / "out")
    tfrecords.write_tfrecords(reader, prefix, num_shards=3)  # more shards than some fill: one stays empty
    parsed = _parsed(prefix, 3, 3, False)
    _assert_matches_reader(reader, parsed, False)
    assert parsed[2]["masks"].shape == (0, 24, 32) and parsed[2]["keypoints"].shape == (0, 3, 3)


def test_pipeline_from_tfrecords_equals_pipeline_from_json(shapes_data, tmp_path):
    reader = _shapes_reader(shapes_data)
    prefix = str(tmp_path / "train")
    tfrecords.write_tfrecords(reader, prefix, num_shards=2)
    for options in (pipeline.InputOptions(batch_size=4, training=False, scale=(128, 96), mask_size=16,
                                          max_instances=3, with_semantic=True),
                    pipeline.InputOptions(batch_size=2, scale=(128, 96), short_edge_range=(64, 128), mask_size=8,
                                          max_instances=4, with_keypoints=False, shuffle_buffer=1)):
        from_json = list(pipeline.from_coco(reader, options).take(3))
        from_records = list(pipeline.from_tfrecords(prefix, options).take(3))
        assert len(from_json) == len(from_records) > 0
        for a, b in zip(from_json, from_records):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


def test_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
    images = [{"id": i, "file_name": f"im{i}.png", "height": 24, "width": 32} for i in (1, 2, 3)]
    path = write_coco(tmp_path, images, [], [{"id": 1, "name": "a"}])
    (tmp_path / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n but nothing else")
    reader = coco.CocoReader(path, str(tmp_path))
    images[2]["height"] = 30  # the json disagrees with the file
    reader.records[2].height = 30
    with caplog.at_level(logging.WARNING):
        _, skipped = tfrecords.write_tfrecords(reader, str(tmp_path / "out"), with_masks=False)
    assert skipped == 2 and "im2.png" in caplog.text and "im3.png" in caplog.text
    assert sorted(_parsed(str(tmp_path / "out"), 1, 0, False, with_masks=False)) == [1]
    with pytest.raises(ValueError, match="without masks"):
        pipeline.from_tfrecords(str(tmp_path / "out"), pipeline.InputOptions())


def test_a_killed_conversion_leaves_no_shards(shapes_data, tmp_path, monkeypatch):
    reader = _shapes_reader(shapes_data)
    calls = []

    def dies_on_third(reader, record, with_masks=True):
        calls.append(record.image_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return b"x"

    monkeypatch.setattr(tfrecords, "serialize_record", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        tfrecords.write_tfrecords(reader, str(tmp_path / "train"), num_shards=2)
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="train.meta.json"):
        tfrecords.read_metadata(str(tmp_path / "train"))
    with pytest.raises(ValueError, match="num_shards"):
        tfrecords.write_tfrecords(reader, str(tmp_path / "x"), num_shards=0)
