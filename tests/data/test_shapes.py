"""The synthetic shapes dataset: real COCO format, deterministic, consistent, cached and atomic."""

import filecmp
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.coco_files import TINY_SHAPES
from tfdet.data import coco, shapes

SMALL = dict(TINY_SHAPES, num_train=3, num_val=2)


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = shapes.ensure_shapes(str(tmp_path / "a"), **SMALL)
    shapes.ensure_shapes(str(tmp_path / "b"), **SMALL)
    shapes.ensure_shapes(str(tmp_path / "c"), **dict(SMALL, seed=1))
    names = _files(tmp_path / "a")
    assert names == _files(tmp_path / "b") == _files(tmp_path / "c")
    assert len([n for n in names if "/images/" in n]) == 5
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(tmp_path / "a", tmp_path / "c", names, shallow=False)
    assert "annotations/instances_train.json" in mismatch
    assert os.path.isfile(a["val"].ann_file) and os.path.isdir(a["val"].semantic_dir)


def test_annotations_agree_with_images_masks_and_semantic_maps(shapes_data):
    for split in shapes.SPLITS:
        paths = shapes_data[split]
        reader = coco.CocoReader(paths.ann_file, paths.image_dir, semantic_dir=paths.semantic_dir,
                                 check_images="decode")
        assert reader.class_names == list(shapes.CATEGORIES)
        assert reader.keypoint_names == list(shapes.KEYPOINT_NAMES)
        np.testing.assert_array_equal(reader.keypoint_flip_map, shapes.FLIP_MAP)
        assert not reader.stats, reader.stats  # nothing clipped, dropped or corrupt
        assert len(reader) == SMALL_COUNTS[split]
        for rec in reader.records:
            image = tf.io.decode_image(tf.io.read_file(rec.file_name)).numpy()
            assert image.shape == (rec.height, rec.width, 3)
            assert 96 <= rec.height <= 128 and 96 <= rec.width <= 128
            assert 1 <= rec.num_instances <= 3 and not rec.is_crowd.any()
            masks = reader.load_masks(rec)
            semantic = tf.io.decode_png(tf.io.read_file(rec.semantic_file))[..., 0].numpy()
            expected_semantic = np.zeros_like(semantic)
            for box, cls, mask, kps in zip(rec.boxes, rec.classes, masks, rec.keypoints):
                ys, xs = np.nonzero(mask)
                # The polygon's bounds are the box: the rasterized mask lies inside it and reaches each
                # side to within a pixel (a pointed apex may cover too little of its pixel to be drawn).
                lo, hi = np.array([xs.min(), ys.min()]), np.array([xs.max() + 1, ys.max() + 1])
                assert np.all(lo >= np.floor(box[:2])) and np.all(lo <= np.floor(box[:2]) + 1)
                assert np.all(hi <= np.ceil(box[2:])) and np.all(hi >= np.ceil(box[2:]) - 1)
                area = mask.sum() / ((box[2] - box[0]) * (box[3] - box[1]))
                assert {0: 0.7, 1: 0.95, 2: 0.4}[cls] < area <= 1.0  # circle ~pi/4, square 1, triangle 1/2
                expected_semantic[mask > 0] = cls + 1
                np.testing.assert_allclose(kps[0, :2], [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
                np.testing.assert_allclose([kps[1, 0], kps[2, 0], kps[3, 1], kps[4, 1]], box[[0, 2, 1, 3]])
                assert (kps[:, 2] == 2).all()
            np.testing.assert_array_equal(semantic, expected_semantic)
            assert not np.any(masks.sum(0) > 1)  # shapes never overlap


SMALL_COUNTS = {"train": TINY_SHAPES["num_train"], "val": TINY_SHAPES["num_val"]}


def test_reused_when_unchanged_and_regenerated_when_parameters_change(tmp_path):
    root = str(tmp_path / "shapes")
    shapes.ensure_shapes(root, **SMALL)
    stamp = os.path.join(root, "stamp.json")
    marker = os.path.join(root, "train", "marker")
    open(marker, "w").close()
    shapes.ensure_shapes(root, **SMALL)
    assert os.path.exists(marker)  # reused, not rewritten
    shapes.ensure_shapes(root, **dict(SMALL, num_val=1))
    assert not os.path.exists(marker)
    with open(stamp) as f:
        assert json.load(f)["params"]["num_val"] == 1
    assert len(os.listdir(os.path.join(root, "val", "images"))) == 1
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no temporary folders left behind


def test_half_written_or_killed_generation_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    os.makedirs(root / "train")  # a half dataset from an old non-atomic writer: no stamp
    shapes.ensure_shapes(str(root), **SMALL)
    assert os.path.isfile(root / "stamp.json")

    def killed(out, params):
        os.makedirs(os.path.join(out, "train"))
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_generate", killed)
    with pytest.raises(KeyboardInterrupt):
        shapes.ensure_shapes(str(tmp_path / "other"), **SMALL)
    assert sorted(os.listdir(tmp_path)) == ["shapes"]


def test_default_root_and_parameter_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDET_DATA_DIR", str(tmp_path))
    assert shapes.default_root() == str(tmp_path / "shapes")
    monkeypatch.delenv("TFDET_DATA_DIR")
    assert shapes.default_root() == os.path.join(os.path.expanduser("~"), ".cache", "tfdet", "shapes")
    with pytest.raises(ValueError, match="num_tain"):
        shapes.ensure_shapes(str(tmp_path), num_tain=3)
    with pytest.raises(ValueError, match="image_format"):
        shapes.ensure_shapes(str(tmp_path), image_format="gif")


def test_jpeg_images(tmp_path):
    split = shapes.ensure_shapes(str(tmp_path / "s"), **dict(SMALL, image_format="jpg"))["val"]
    reader = coco.CocoReader(split.ann_file, split.image_dir, check_images="decode")
    assert len(reader) == 2 and reader.records[0].file_name.endswith(".jpg")
