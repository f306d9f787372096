"""The tf.data input: padded dense batches with documented shapes, dtypes and values."""

import numpy as np
import pytest
import tensorflow as tf

from tests.data.coco_files import write_coco
from tfdet.data import augment, coco, pipeline

EVAL = pipeline.InputOptions(batch_size=2, training=False, scale=(128, 96), mask_size=16, max_instances=4,
                             with_semantic=True, semantic_stride=1)
TRAIN = pipeline.InputOptions(batch_size=2, scale=(128, 96), short_edge_range=(64, 128), mask_size=16,
                              max_instances=4, with_semantic=True, seed=3, shuffle_buffer=8)


def _reader(shapes_data, split="train"):
    paths = shapes_data[split]
    return coco.CocoReader(paths.ann_file, paths.image_dir, semantic_dir=paths.semantic_dir)


def _take(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def test_batch_shapes_and_dtypes(shapes_data):
    ds = pipeline.from_coco(_reader(shapes_data), TRAIN)
    expected = {"images": ((2, 128, 128, 3), tf.float32), "image_info": ((2, 3, 2), tf.float32),
                "image_id": ((2,), tf.int64), "gt_boxes": ((2, 4, 4), tf.float32),
                "gt_classes": ((2, 4), tf.int32), "gt_is_crowd": ((2, 4), tf.bool),
                "gt_masks": ((2, 4, 16, 16), tf.uint8), "gt_keypoints": ((2, 4, 5, 3), tf.float32),
                "semantic": ((2, 16, 16), tf.uint8)}  # stride 8
    assert {k: (tuple(s.shape), s.dtype) for k, s in ds.element_spec.items()} == expected
    batch = next(iter(ds))
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    full = pipeline.from_coco(_reader(shapes_data), pipeline.InputOptions(
        **dict(TRAIN.__dict__, semantic_stride=1, with_keypoints=False, mask_size=0)))
    spec = full.element_spec
    assert spec["semantic"].shape == (2, 128, 128)
    assert "gt_keypoints" not in spec and "gt_masks" not in spec


def test_eval_batches_hold_the_resized_annotations(shapes_data):
    reader = _reader(shapes_data, "val")
    batches = _take(pipeline.from_coco(reader, EVAL), 2)
    assert [b["images"].shape[0] for b in batches] == [2, 1]  # 3 images, the partial batch is kept
    records = {r.image_id: r for r in reader.records}
    for b in batches:
        for i, image_id in enumerate(b["image_id"]):
            rec = records[image_id]
            info = b["image_info"][i]
            np.testing.assert_array_equal(info[0], [rec.height, rec.width])
            sy, sx = info[1]
            vh, vw = info[2].astype(int)
            assert max(vh, vw) <= 128 and min(vh, vw) <= 96 and (max(vh, vw) == 128 or min(vh, vw) == 96)
            np.testing.assert_allclose([vh / rec.height, vw / rec.width], [sy, sx], rtol=1e-6)
            n = rec.num_instances
            np.testing.assert_allclose(b["gt_boxes"][i, :n], rec.boxes * [sx, sy, sx, sy], rtol=1e-6)
            np.testing.assert_array_equal(b["gt_classes"][i, :n], rec.classes)
            assert (b["gt_classes"][i, n:] == -1).all() and not b["gt_boxes"][i, n:].any()
            assert not b["gt_is_crowd"][i].any()
            masks = augment.crop_masks_to_boxes(reader.load_masks(rec), rec.boxes, 16).numpy()
            np.testing.assert_array_equal(b["gt_masks"][i, :n], masks)
            np.testing.assert_allclose(b["gt_keypoints"][i, :n, :, :2], rec.keypoints[..., :2] * [sx, sy], rtol=1e-6)
            image = tf.io.decode_image(tf.io.read_file(rec.file_name)).numpy()
            resized = tf.image.resize(image.astype(np.float32), [vh, vw]).numpy()
            np.testing.assert_allclose(b["images"][i, :vh, :vw], resized, atol=1e-3)
            assert not b["images"][i, vh:].any() and not b["images"][i, :, vw:].any()
            semantic = b["semantic"][i]
            assert (semantic[vh:] == 255).all() and (semantic[:, vw:] == 255).all()
            inside = np.zeros((vh, vw), bool)
            for box, cls in zip(b["gt_boxes"][i, :n], rec.classes):
                x1, y1, x2, y2 = box
                ys, xs = np.nonzero(semantic[:vh, :vw] == cls + 1)
                inside[ys, xs] |= (xs >= np.floor(x1)) & (xs < np.ceil(x2)) & (ys >= np.floor(y1)) & (ys < np.ceil(y2))
            assert inside.sum() == (semantic[:vh, :vw] > 0).sum() > 0  # labelled pixels lie in their boxes


def test_training_is_seeded_and_augments(shapes_data):
    reader = _reader(shapes_data)
    first = _take(pipeline.from_coco(reader, TRAIN), 6)
    again = _take(pipeline.from_coco(reader, TRAIN), 6)
    other = _take(pipeline.from_coco(reader, pipeline.InputOptions(**dict(TRAIN.__dict__, seed=4))), 6)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any(not np.array_equal(a["images"], b["images"]) for a, b in zip(first, other))
    ids = np.concatenate([b["image_id"] for b in first])
    assert set(ids) == {r.image_id for r in reader.records}  # 12 draws from a 6-image epoch, repeated
    valid = np.concatenate([b["image_info"][:, 2] for b in first])
    assert len(set(valid.min(1))) > 3 and valid.min() >= 64 and valid.max() <= 128  # long edge capped at 128
    records = {r.image_id: r for r in reader.records}
    flipped = 0
    for b in first:
        for i, image_id in enumerate(b["image_id"]):
            n = records[image_id].num_instances
            boxes, kps = b["gt_boxes"][i, :n], b["gt_keypoints"][i, :n]
            # Keypoint "left" stays the leftmost point of the shape and "right" the rightmost, flipped or not.
            np.testing.assert_allclose(kps[:, 1, 0], boxes[:, 0], atol=1e-3)
            np.testing.assert_allclose(kps[:, 2, 0], boxes[:, 2], atol=1e-3)
            np.testing.assert_allclose(kps[:, 0, :2], (boxes[:, :2] + boxes[:, 2:]) / 2, atol=1e-3)
            sx = b["image_info"][i, 1, 1]
            flipped += not np.allclose(boxes[:, 0], records[image_id].boxes[:, 0] * sx, atol=1e-3)
            squares = b["gt_classes"][i, :n] == 1
            assert b["gt_masks"][i, :n][squares].all()  # a square fills its box, flipped or not
    assert 0 < flipped < 12


def test_too_many_instances_are_truncated(shapes_data):
    reader = _reader(shapes_data)
    options = pipeline.InputOptions(**dict(EVAL.__dict__, max_instances=1, batch_size=6, with_semantic=False))
    (batch,) = _take(pipeline.from_coco(reader, options), 1)
    assert batch["gt_classes"].shape == (6, 1) and (batch["gt_classes"] >= 0).all()
    np.testing.assert_array_equal(batch["gt_classes"][:, 0], [r.classes[0] for r in reader.records])


def test_input_context_shards_and_splits_the_batch(shapes_data):
    reader = _reader(shapes_data)
    options = pipeline.InputOptions(**dict(EVAL.__dict__, batch_size=4))
    ids = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batches = _take(pipeline.from_coco(reader, options, context), 10)
        assert [len(b["image_id"]) for b in batches] == [2, 1]
        ids.append(set(np.concatenate([b["image_id"] for b in batches])))
    assert not ids[0] & ids[1] and ids[0] | ids[1] == {r.image_id for r in reader.records}


def test_an_image_that_fails_to_decode_is_dropped_not_fatal(tmp_path):
    images = [{"id": i, "file_name": f"im{i}.png", "height": 24, "width": 32} for i in (1, 2, 3)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    path = write_coco(tmp_path, images, anns, [{"id": 1, "name": "thing"}])
    (tmp_path / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken beyond the header")
    reader = coco.CocoReader(path, str(tmp_path))
    assert len(reader) == 3  # the header check passes: only decoding finds the problem
    options = pipeline.InputOptions(batch_size=4, training=False, scale=(64, 32), mask_size=8)
    (batch,) = _take(pipeline.from_coco(reader, options), 2)
    np.testing.assert_array_equal(batch["image_id"], [1, 3])
    np.testing.assert_array_equal(batch["gt_masks"][0, 0], np.ones((8, 8)))  # a box without segmentation


def test_option_errors(shapes_data):
    paths = shapes_data["val"]
    reader = coco.CocoReader(paths.ann_file, paths.image_dir)
    with pytest.raises(ValueError, match="semantic_dir"):
        pipeline.from_coco(reader, EVAL)
    with pytest.raises(ValueError, match="pad_size"):
        pipeline.InputOptions(pad_size=(100, 96), scale=(96, 64)).padded_size()
    assert pipeline.InputOptions().padded_size() == (1344, 1344)
    assert pipeline.InputOptions(pad_size=(1344, 1376)).padded_size() == (1344, 1376)


def test_size_rule(tmp_path):
    """size_rule="torchvision" resizes 112 x 157 to 159 x 223 at (224, 160) (float64 floor), the default
    "round" to 160 x 224; both pad to the same square."""
    images = [{"id": 1, "file_name": "a.png", "height": 112, "width": 157}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0}]
    path = write_coco(str(tmp_path), images, annotations, [{"id": 1, "name": "thing"}])
    reader = coco.CocoReader(path, str(tmp_path))
    for rule, valid in (("round", (160, 224)), ("torchvision", (159, 223))):
        options = pipeline.InputOptions(batch_size=1, training=False, scale=(224, 160), mask_size=0, size_rule=rule)
        (batch,) = _take(pipeline.from_coco(reader, options), 1)
        assert tuple(batch["image_info"][0, 2]) == valid and batch["images"].shape == (1, 224, 224, 3)
        np.testing.assert_allclose(batch["gt_boxes"][0, 0], np.array([10, 10, 60, 50]) * valid[1] / 157 * [1, 0, 1, 0]
                                   + np.array([10, 10, 60, 50]) * valid[0] / 112 * [0, 1, 0, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="size_rule must be one of"):
        pipeline.InputOptions(size_rule="floor")
