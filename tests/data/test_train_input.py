"""The training input of a `data` block: option and path errors in one line before any work, the
category count against the model, no endless wait on a data set whose images do not decode."""

import json
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.data.coco_files import TINY_SHAPES, write_coco
from tfdet.data import coco, pipeline, tfrecords
from tfdet.data.report import DataError
from tfdet.data.train_input import TrainInput

CATS = [{"id": i, "name": f"c{i}"} for i in range(1, 6)]


def _coco_block(tmp_path, n=3, categories=CATS):
    images = [{"id": i, "file_name": f"im{i}.png", "height": 24, "width": 32} for i in range(1, n + 1)]
    anns = [{"id": i, "image_id": i, "category_id": categories[i % len(categories)]["id"], "bbox": [2, 2, 9, 9],
             "iscrowd": 0} for i in range(1, n + 1)]
    ann_file = write_coco(tmp_path, images, anns, categories)
    return dict(source="coco", train_ann=ann_file, train_images=str(tmp_path), scale=(64, 32), mask_size=0,
                max_instances=4)


@pytest.mark.parametrize("options,message", [
    (dict(flip_prob=2.0), r"config.data.flip_prob must be a probability in \[0, 1\], got 2.0"),
    (dict(scale=(0, 0)), r"config.data.scale must be \(long, short\) integer sizes >= 1.*got \(0, 0\)"),
    (dict(max_instances=0), "config.data.max_instances must be an integer >= 1, got 0"),
    (dict(mask_size=1), "config.data.mask_size must be 0 .no masks. or an integer >= 2, got 1"),
    (dict(short_edge_range=(800, 400)), "config.data.short_edge_range must be None or .low, high."),
    (dict(pad_size=(100, 96)), "config.data.pad_size must be None or .h, w. multiples of 32"),
    (dict(shuffle_buffer=0), "config.data.shuffle_buffer must be an integer >= 1"),
    (dict(check_images="all"), "config.data.check_images must be 'header' or 'decode'"),
])
def test_bad_options_are_one_line_errors_naming_the_field(tmp_path, options, message):
    with pytest.raises(ValueError, match=message) as err:
        TrainInput(dict(_coco_block(tmp_path), **options), 2, 0)
    assert "\n" not in str(err.value)


def test_inference_fields_of_converted_configs_are_accepted(tmp_path):
    """A converted zoo config's data block (class_names, category_ids, pad_to_multiple) trains as it is."""
    block = dict(_coco_block(tmp_path), class_names=[c["name"] for c in CATS], category_ids=[c["id"] for c in CATS],
                 pad_to_multiple=32)
    assert TrainInput(block, 2, 0).class_names == [c["name"] for c in CATS]
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['class_name'\].*category_ids"):
        TrainInput(dict(block, class_name="x"), 2, 0)


def test_bad_batch_sizes():
    for bad in (0, -4, 2.5):
        with pytest.raises(ValueError, match=r"batch size must be an integer >= 1.*config.train.batch_size"):
            TrainInput({}, bad, 0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        pipeline.InputOptions(batch_size=0)


def test_missing_paths_are_named(tmp_path):
    block = _coco_block(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.data.train_ann: COCO annotation file not found: /no/ann.json"):
        TrainInput(dict(block, train_ann="/no/ann.json"), 2, 0)
    with pytest.raises(FileNotFoundError, match="config.data.train_images: image folder not found: /no/images"):
        TrainInput(dict(block, train_images="/no/images"), 2, 0)
    with pytest.raises(ValueError, match=r"config.data.train_ann is empty: .*--config.data.train_ann="):
        TrainInput(dict(block, train_ann=""), 2, 0)
    with pytest.raises(ValueError, match="config.data.tfrecords is empty"):
        TrainInput(dict(source="tfrecords", mask_size=0), 2, 0)
    with pytest.raises(FileNotFoundError, match="TFRecord metadata not found: /no/records.meta.json"):
        TrainInput(dict(source="tfrecords", tfrecords="/no/records", mask_size=0), 2, 0)


def test_category_count_against_num_classes(tmp_path):
    source = TrainInput(_coco_block(tmp_path), 2, 0)
    assert source.num_images == 3 and source.class_names == ["c1", "c2", "c3", "c4", "c5"]
    source.check_num_classes(5)
    with pytest.raises(ValueError, match=r"the data has 5 categories \(c1, c2, c3, c4, c5\) but "
                                         r"config.model.num_classes is 3: set --config.model.num_classes=5"):
        source.check_num_classes(3)


def test_no_usable_image_stops_with_the_summary(tmp_path):
    block = _coco_block(tmp_path)
    for i in (1, 2, 3):  # a valid PNG signature, then garbage
        (tmp_path / f"im{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    start = time.monotonic()
    with pytest.raises(DataError, match=r"0 of 3 images usable\. 3 corrupt images: 3 cannot be decoded"):
        TrainInput(block, 2, 0)
    assert time.monotonic() - start < 30


def test_training_input_ends_with_an_error_when_no_image_decodes(tmp_path):
    """The reader's start-up check is bypassed (check_images="none"): the pipeline itself must not drop
    undecodable images forever (it used to hang, logging a warning per image)."""
    block = _coco_block(tmp_path)
    for i in (1, 2, 3):
        (tmp_path / f"im{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    reader = coco.CocoReader(block["train_ann"], str(tmp_path), check_images="none")
    options = pipeline.InputOptions(batch_size=2, scale=(64, 32), mask_size=0, max_instances=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="without one image that decodes"):
        next(iter(pipeline.from_coco(reader, options)))


def test_tfrecords_source_checks(tmp_path, shapes_data):
    split = shapes_data["train"]
    reader = coco.CocoReader(split.ann_file, split.image_dir)
    prefix = str(tmp_path / "rec" / "train")
    tfrecords.write_tfrecords(reader, prefix, num_shards=2, with_masks=False)
    source = TrainInput(dict(source="tfrecords", tfrecords=prefix, mask_size=0, scale=(128, 96)), 2, 0)
    assert source.num_images == TINY_SHAPES["num_train"] and source.class_names == ["circle", "square", "triangle"]
    with pytest.raises(ValueError, match="written without masks; set config.data.mask_size=0"):
        TrainInput(dict(source="tfrecords", tfrecords=prefix, mask_size=16), 2, 0)
    (tmp_path / "rec" / "train-00001-of-00002.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 shards are missing, e.g. .*train-00001-of-00002"):
        TrainInput(dict(source="tfrecords", tfrecords=prefix, mask_size=0), 2, 0)
    meta = json.loads(open(prefix + ".meta.json").read())
    empty = str(tmp_path / "rec" / "empty")
    for path in tfrecords.shard_paths(empty, 1):
        tf.io.TFRecordWriter(path).close()
    with open(empty + ".meta.json", "w") as f:
        json.dump(dict(meta, num_shards=1, num_images=0, skipped_images=4), f)
    with pytest.raises(DataError, match=r"hold no image \(4 skipped when they were written\)"):
        TrainInput(dict(source="tfrecords", tfrecords=empty, mask_size=0), 2, 0)


def test_size_mismatch_trains_at_the_files_size(tmp_path):
    """The batch's original size (image_info row 0) and the boxes agree with the file, not the json."""
    block = _coco_block(tmp_path, n=1)
    data = json.loads(open(block["train_ann"]).read())
    data["images"][0].update(height=48, width=16)
    with open(block["train_ann"], "w") as f:
        json.dump(data, f)
    source = TrainInput(dict(block, flip_prob=0.0), 1, 0)
    assert source.report.counts["resized_images"] == 1
    batch = next(iter(source.dataset()))
    np.testing.assert_array_equal(batch["image_info"][0, 0], [24, 32])
    sy, sx = batch["image_info"][0, 1].numpy()
    np.testing.assert_allclose(batch["gt_boxes"][0, 0], [2 * sx, 2 * sy, 11 * sx, 11 * sy], rtol=1e-6)
