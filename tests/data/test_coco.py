"""The COCO reader: box/class conversion, polygon and RLE masks, crowd, keypoints, empty and bad inputs."""

import json
import logging
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tfdet.data import coco
from tests.data.coco_files import write_coco, write_png

CATS = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "person"}, {"id": 5, "name": "kite"}]


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE written from its definition: run lengths of the column-major pixels,
    starting with a (possibly empty) run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _image(i, h=24, w=32):
    return {"id": i, "file_name": f"im{i}.png", "height": h, "width": w}


def _ann(i, image_id, bbox, cat=1, **extra):
    return dict({"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0}, **extra)


def test_boxes_classes_and_polygon_masks(tmp_path):
    poly = [2, 3, 10, 3, 10, 8, 2, 8]  # the rectangle x in [2, 10], y in [3, 8]
    anns = [_ann(1, 1, [2, 3, 8, 5], cat=5, segmentation=[poly]),
            _ann(2, 1, [20.5, 1.5, 4, 10], cat=90, segmentation=[[20.5, 1.5, 24.5, 1.5, 24.5, 11.5]])]
    reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    assert reader.category_ids == [1, 5, 90]
    assert reader.class_names == ["person", "kite", "zebra"]
    assert reader.category_to_class == {1: 0, 5: 1, 90: 2}
    assert reader.class_to_category == {0: 1, 1: 5, 2: 90}
    (rec,) = reader.records
    np.testing.assert_array_equal(rec.boxes, [[2, 3, 10, 8], [20.5, 1.5, 24.5, 11.5]])
    np.testing.assert_array_equal(rec.classes, [1, 2])
    assert rec.boxes.dtype == np.float32 and rec.classes.dtype == np.int32
    assert rec.file_name == os.path.join(str(tmp_path), "im1.png")
    masks = reader.load_masks(rec)
    assert masks.shape == (2, 24, 32) and masks.dtype == np.uint8
    expected = np.zeros((24, 32), np.uint8)
    expected[3:8, 2:10] = 1  # pixel (x, y) covers [x, x + 1] x [y, y + 1]
    np.testing.assert_array_equal(masks[0], expected)
    assert set(np.unique(masks[1])) == {0, 1}


def test_compressed_and_uncompressed_rle(tmp_path):
    rng = np.random.default_rng(3)
    m1 = (rng.random((24, 32)) > 0.7).astype(np.uint8)
    m2 = np.zeros((24, 32), np.uint8)
    m2[5:9, 11:30] = 1
    compressed = mask_utils.encode(np.asfortranarray(m1))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as stored in json
    anns = [_ann(1, 1, [0, 0, 32, 24], segmentation=compressed, iscrowd=1),
            _ann(2, 1, [11, 5, 19, 4], segmentation=_uncompressed_rle(m2))]
    reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    masks = reader.load_masks(reader.records[0])
    np.testing.assert_array_equal(masks[0], m1)
    np.testing.assert_array_equal(masks[1], m2)


def test_missing_or_bad_segmentation_falls_back_to_the_box(tmp_path, caplog):
    anns = [_ann(1, 1, [2.5, 3, 4, 5]), _ann(2, 1, [10, 10, 2, 2], segmentation={"bad": 1})]
    reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    with caplog.at_level(logging.WARNING):
        masks = reader.load_masks(reader.records[0])
    expected = np.zeros((24, 32), np.uint8)
    expected[3:8, 2:7] = 1
    np.testing.assert_array_equal(masks[0], expected)
    assert masks[1].sum() == 4
    assert reader.stats["box_masks"] == 2
    assert "annotation id 2" in caplog.text


def test_crowd_regions_are_kept_and_flagged(tmp_path):
    anns = [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 1, [8, 8, 10, 10], iscrowd=1), _ann(3, 2, [0, 0, 4, 4], iscrowd=1)]
    path = write_coco(tmp_path, [_image(1), _image(2)], anns, CATS)
    reader = coco.CocoReader(path, str(tmp_path))
    np.testing.assert_array_equal(reader.records[0].is_crowd, [False, True])
    np.testing.assert_array_equal(reader.records[1].is_crowd, [True])
    # An image with only crowd regions has nothing to learn from: skip_empty drops it.
    skipping = coco.CocoReader(path, str(tmp_path), skip_empty=True)
    assert [r.image_id for r in skipping.records] == [1]
    assert skipping.stats["skipped_empty_images"] == 1


def test_images_without_annotations_kept_or_skipped(tmp_path):
    path = write_coco(tmp_path, [_image(1), _image(2), _image(3)], [_ann(1, 2, [1, 1, 5, 5])], CATS)
    kept = coco.CocoReader(path, str(tmp_path))
    assert [r.image_id for r in kept.records] == [1, 2, 3]
    empty = kept.records[0]
    assert empty.boxes.shape == (0, 4) and empty.classes.shape == (0,) and empty.is_crowd.shape == (0,)
    assert kept.load_masks(empty).shape == (0, 24, 32)
    skipped = coco.CocoReader(path, str(tmp_path), skip_empty=True)
    assert [r.image_id for r in skipped.records] == [2]


def test_keypoints_are_shifted_to_continuous_coordinates(tmp_path):
    names = ["nose", "left_eye", "right_eye", "left_ankle", "right_ankle"]
    cats = [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}]
    kps = [10, 5, 2, 8, 4, 1, 0, 0, 0, 3, 20, 2, 14, 21, 2]
    anns = [_ann(1, 1, [1, 1, 20, 22], keypoints=kps, num_keypoints=4), _ann(2, 1, [2, 2, 3, 3])]
    reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, cats), str(tmp_path))
    assert reader.keypoint_names == names and reader.num_keypoints == 5
    np.testing.assert_array_equal(reader.keypoint_flip_map, [0, 2, 1, 4, 3])
    rec = reader.records[0]
    assert rec.keypoints.shape == (2, 5, 3) and rec.keypoints.dtype == np.float32
    np.testing.assert_array_equal(rec.keypoints[0], [[10.5, 5.5, 2], [8.5, 4.5, 1], [0, 0, 0],
                                                     [3.5, 20.5, 2], [14.5, 21.5, 2]])
    np.testing.assert_array_equal(rec.keypoints[1], np.zeros((5, 3)))  # no keypoints annotated


def test_keypoint_flip_map_from_names():
    np.testing.assert_array_equal(coco.keypoint_flip_map(["center", "left", "right", "top"]), [0, 2, 1, 3])
    np.testing.assert_array_equal(coco.keypoint_flip_map(["left_hand", "nose", "right_hand"]), [2, 1, 0])
    assert coco.keypoint_flip_map([]).shape == (0,)
    with pytest.raises(ValueError, match="left_hand"):
        coco.keypoint_flip_map(["left_hand", "nose"])


def test_no_keypoints_gives_k_zero(tmp_path):
    reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], [_ann(1, 1, [1, 1, 5, 5])], CATS), str(tmp_path))
    assert reader.num_keypoints == 0 and reader.records[0].keypoints.shape == (1, 0, 3)


def test_out_of_bounds_and_bad_annotations_are_clipped_or_dropped(tmp_path, caplog):
    anns = [_ann(1, 1, [-3, 2, 10, 30]),          # clipped to (0, 2, 7, 24)
            _ann(2, 1, [40, 2, 5, 5]),            # entirely outside: empty after clipping, dropped
            _ann(3, 1, [1, 1, 0, 5]),             # zero width, dropped
            _ann(4, 1, [1, 1, 5, 5], cat=7),      # unknown category, dropped
            _ann(5, 1, "nonsense"),               # malformed, dropped
            _ann(6, 1, [3, 3, 4, 4])]
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    rec = reader.records[0]
    np.testing.assert_array_equal(rec.ann_ids, [1, 6])
    np.testing.assert_array_equal(rec.boxes, [[0, 2, 7, 24], [3, 3, 7, 7]])
    assert reader.stats["clipped_boxes"] == 2 and reader.stats["dropped_annotations"] == 4
    for ann_id in (1, 2, 3, 4, 5):
        assert f"annotation id {ann_id} " in caplog.text
    assert "im1.png" in caplog.text
    assert "4 dropped annotations" in caplog.text  # the summary line shows the counts


def test_bad_annotation_files_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        coco.CocoReader(missing, str(tmp_path))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        coco.CocoReader(str(broken), str(tmp_path))
    no_images = tmp_path / "no_images.json"
    no_images.write_text(json.dumps({"categories": CATS}))
    with pytest.raises(ValueError, match="no_images.json.*'images'"):
        coco.CocoReader(str(no_images), str(tmp_path))
    no_cats = write_coco(tmp_path / "nocats", [_image(1)], [], [])
    with pytest.raises(ValueError, match="nocats/ann.json.*categories"):
        coco.CocoReader(no_cats, str(tmp_path / "nocats"))


def test_missing_image_is_an_error_naming_it(tmp_path):
    path = write_coco(tmp_path, [_image(1)], [], CATS, image_files=False)
    with pytest.raises(FileNotFoundError, match="image id 1.*im1.png"):
        coco.CocoReader(path, str(tmp_path))
    assert len(coco.CocoReader(path, str(tmp_path), check_images="none")) == 1


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    path = write_coco(tmp_path, [_image(1), _image(2), _image(3), _image(4)], [_ann(1, 2, [1, 1, 5, 5])], CATS)
    (tmp_path / "im1.png").write_bytes(b"this is not an image at all")
    (tmp_path / "im3.png").write_bytes(b"")
    good = (tmp_path / "im4.png").read_bytes()
    (tmp_path / "im4.png").write_bytes(good[: len(good) // 2])  # truncated: only a full decode sees it
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(path, str(tmp_path))
    assert [r.image_id for r in reader.records] == [2, 4]
    assert reader.stats["corrupt_images"] == 2
    assert "im1.png" in caplog.text and "im3.png" in caplog.text
    decoded = coco.CocoReader(path, str(tmp_path), check_images="decode")
    assert [r.image_id for r in decoded.records] == [2]
    assert decoded.stats["corrupt_images"] == 3
    with pytest.raises(ValueError, match="check_images"):
        coco.CocoReader(path, str(tmp_path), check_images="yes")


def test_semantic_file_names(tmp_path):
    write_png(tmp_path / "a.png", 4, 4)
    path = write_coco(tmp_path, [dict(_image(1), file_name="a.png")], [], CATS, False)
    reader = coco.CocoReader(path, str(tmp_path), semantic_dir="/sem", check_images="none")
    assert reader.records[0].semantic_file == "/sem/a.png"
    with pytest.raises(FileNotFoundError, match="image id 1 semantic map not found: /sem/a.png"):
        coco.CocoReader(path, str(tmp_path), semantic_dir="/sem")
    os.makedirs(tmp_path / "sem")
    write_png(tmp_path / "sem" / "a.png", 4, 4)
    assert coco.CocoReader(path, str(tmp_path), semantic_dir=str(tmp_path / "sem")).records[0].semantic_file


def test_image_entry_without_size_names_the_file(tmp_path):
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png"}], [], CATS, False)
    with pytest.raises(ValueError, match="ann.json.*'height'"):
        coco.CocoReader(path, str(tmp_path))
