"""Damaged data sets: every record the COCO reader drops or repairs is counted by reason in one summary
naming the first files; a data set with nothing usable stops at once; image sizes come from the headers."""

import json
import logging
import struct

import numpy as np
import pytest
import tensorflow as tf

from tests.data.coco_files import write_coco, write_png
from tfdet.data import coco, image_files
from tfdet.data.report import DataError

CATS = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]


def _image(i, h=24, w=32, **extra):
    return dict({"id": i, "file_name": f"im{i}.png", "height": h, "width": w}, **extra)


def _ann(i, image_id, bbox=(2, 3, 8, 5), **extra):
    return dict({"id": i, "image_id": image_id, "category_id": 1, "bbox": list(bbox), "iscrowd": 0}, **extra)


def _summaries(caplog):
    """The WARNING records the data package logged (the reader's summary is one of them)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("tfdet.data") and r.levelno >= logging.WARNING]


def _corrupt_jpeg(rng, height=24, width=32):
    """A JPEG whose headers (through the start of scan) are intact and whose coded data is garbage."""
    data = tf.io.encode_jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).numpy()
    sos = data.index(b"\xff\xda")
    return data[:sos + 14] + rng.integers(0, 256, 400, dtype=np.uint8).tobytes()


def test_polygon_of_two_points_gets_its_box_as_mask_and_is_counted(tmp_path, caplog):
    anns = [_ann(1, 1, (2, 3, 8, 5), segmentation=[[2, 3, 10, 8]]),  # 2 points: no area
            _ann(2, 1, (12, 3, 8, 5), segmentation=[[12, 3, 20, 3, 20, 8, 12, 8], [1, 1, 2, 2]]),  # one bad part
            _ann(3, 1, (22, 3, 8, 5), segmentation=[[22, 3, 30, 3, 30, 8]])]
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    assert reader.stats["segmentations_replaced_by_box"] == 1 and reader.stats["trimmed_segmentations"] == 1
    masks = reader.load_masks(reader.records[0])
    np.testing.assert_array_equal(masks[0][3:8, 2:10], 1)  # the box, not an all-zero target
    assert masks[0].sum() == 5 * 8
    expected = np.zeros((24, 32), np.uint8)
    expected[3:8, 12:20] = 1
    np.testing.assert_array_equal(masks[1], expected)  # the good part of the polygon
    assert 0 < masks[2].sum() < 40  # a triangle
    (summary,) = _summaries(caplog)
    assert "1 segmentations replaced by box: 1 polygon of fewer than 3 points (e.g. annotation id 1 in im1.png)" \
        in summary
    assert "1 trimmed segmentations" in summary and "annotation id 2 in im1.png" in summary
    with pytest.raises(ValueError, match="3 or more points"):
        coco.decode_segmentation([[2, 3, 10, 8]], 24, 32)


def test_orphans_repeated_ids_and_missing_ids_are_counted_and_repaired(tmp_path, caplog):
    images = [_image(1), _image(2), dict(_image(2), file_name="dup.png")]
    anns = [_ann(1, 1), _ann(1, 2),                       # a repeated annotation id
            {k: v for k, v in _ann(0, 2).items() if k != "id"},  # no id (pycocotools: KeyError)
            _ann(5, 99),                                  # orphan: no image 99
            _ann(6, 1, category_id="1")]                  # a category id that is no integer
    write_png(tmp_path / "dup.png", 24, 32)
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(write_coco(tmp_path, images, anns, CATS), str(tmp_path))
    assert [r.image_id for r in reader.records] == [1, 2]
    assert reader.records[1].file_name.endswith("im2.png")  # the first entry of id 2 is kept
    ids = sorted(int(i) for r in reader.records for i in r.ann_ids)
    assert len(ids) == len(set(ids)) == 3 and ids[0] == 1
    assert set(reader.coco.anns) == set(ids)  # evaluation's ground truth holds the same, indexed annotations
    assert reader.stats["invalid_images"] == 1 and reader.stats["renumbered_annotations"] == 2
    assert reader.stats["dropped_annotations"] == 2
    (summary,) = _summaries(caplog)
    assert "repeated image id (the first entry is kept) (e.g. image id 2 (dup.png))" in summary
    assert "orphan: no image has its image_id (e.g. annotation id 5 with image_id 99)" in summary
    assert "1 repeated id" in summary and "1 no integer 'id'" in summary and "no integer category_id" in summary


def test_string_image_ids_are_reported_and_nothing_usable_stops(tmp_path):
    images = [_image(1), dict(_image(2), id="two")]
    path = write_coco(tmp_path, images, [_ann(1, 1), _ann(2, "two")], CATS, image_files=False)
    for i in (1, 2):
        write_png(tmp_path / f"im{i}.png", 24, 32)
    reader = coco.CocoReader(path, str(tmp_path))
    assert [r.image_id for r in reader.records] == [1]
    assert reader.report.reasons["invalid_images", "no integer 'id'"] == 1
    summary = reader.report.summary()
    assert "image id 'two' (im2.png)" in summary and "1 of 2 images usable" in summary
    only_strings = write_coco(tmp_path / "s", [dict(_image(1), id="a"), dict(_image(2), id="b")], [], CATS, False)
    with pytest.raises(DataError, match=r"0 of 2 images usable\. 2 invalid images: 2 no integer 'id' "
                                        r"\(e\.g\. image id 'a' \(im1\.png\), image id 'b'"):
        coco.CocoReader(only_strings, str(tmp_path / "s"))


def test_size_in_the_json_that_differs_from_the_file_is_replaced_by_the_files(tmp_path, caplog):
    images = [_image(1, h=24, w=32), _image(2, h=24, w=32)]
    path = write_coco(tmp_path, images, [_ann(1, 1, (20, 10, 30, 10)), _ann(2, 2, (20, 10, 30, 10))], CATS)
    write_png(tmp_path / "im2.png", 40, 50)  # the file is 40 x 50, the json says 24 x 32
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(path, str(tmp_path))
    first, second = reader.records
    assert (first.height, first.width) == (24, 32) and (second.height, second.width) == (40, 50)
    np.testing.assert_array_equal(first.boxes, [[20, 10, 32, 20]])  # clipped to its 32 pixel width
    np.testing.assert_array_equal(second.boxes, [[20, 10, 50, 20]])  # fits the file's 50 pixels
    assert (reader.coco.imgs[2]["height"], reader.coco.imgs[2]["width"]) == (40, 50)  # evaluation agrees
    assert reader.load_masks(second).shape == (1, 40, 50)
    (summary,) = _summaries(caplog)
    assert "1 resized images" in summary and "image id 2" in summary and "json 24x32, file 40x50" in summary


def test_a_data_set_of_undecodable_jpegs_stops_at_once_with_the_summary(tmp_path):
    rng = np.random.default_rng(0)
    images = [dict(_image(i), file_name=f"im{i}.jpg") for i in (1, 2, 3, 4)]
    path = write_coco(tmp_path, images, [_ann(i, i) for i in (1, 2, 3, 4)], CATS, image_files=False)
    for i in (1, 2, 3, 4):
        (tmp_path / f"im{i}.jpg").write_bytes(_corrupt_jpeg(rng))
    assert image_files.sniff(str(tmp_path / "im1.jpg")) == (None, (24, 32))  # the header looks right
    with pytest.raises(DataError, match=r"0 of 4 images usable\. 4 corrupt images: 4 cannot be decoded "
                                        r"\(e\.g\. image id 1 \(.*im1\.jpg\), image id 2"):
        coco.CocoReader(path, str(tmp_path), skip_empty=True)


def test_undecodable_images_before_the_first_good_one_are_dropped(tmp_path):
    rng = np.random.default_rng(1)
    images = [_image(1), _image(2), _image(3)]
    path = write_coco(tmp_path, images, [_ann(i, i) for i in (1, 2, 3)], CATS)
    (tmp_path / "im1.png").write_bytes(_corrupt_jpeg(rng))  # a JPEG named .png: the content decides
    reader = coco.CocoReader(path, str(tmp_path))
    assert [r.image_id for r in reader.records] == [2, 3]
    assert reader.report.reasons["corrupt_images", "cannot be decoded"] == 1


def test_missing_image_files_are_skipped_unless_all_are_missing(tmp_path, caplog):
    path = write_coco(tmp_path, [_image(1), _image(2), _image(3)], [_ann(1, 1)], CATS)
    (tmp_path / "im2.png").unlink()
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(path, str(tmp_path))
    assert [r.image_id for r in reader.records] == [1, 3] and reader.stats["missing_images"] == 1
    assert "1 missing images: 1 file not found (e.g. image id 2" in _summaries(caplog)[0]
    with pytest.raises(FileNotFoundError, match="none of its 3 image files exists under /nowhere.*right"):
        coco.CocoReader(path, "/nowhere")


def test_every_drop_is_in_one_summary_not_a_line_each(tmp_path, caplog):
    anns = [_ann(i, 1, (40, 2, 5, 5)) for i in range(1, 8)] + [_ann(9, 1, (1, 1, 4, 4))]  # 7 boxes outside
    with caplog.at_level(logging.WARNING):
        reader = coco.CocoReader(write_coco(tmp_path, [_image(1)], anns, CATS), str(tmp_path))
    assert reader.stats["dropped_annotations"] == 7 and reader.stats["clipped_boxes"] == 7
    (summary,) = _summaries(caplog)
    assert "7 dropped annotations: 7 bbox outside the image or under 1 pixel after clipping (e.g. annotation id 1" \
        " in im1.png: [40, 2, 5, 5], annotation id 2 in im1.png: [40, 2, 5, 5], annotation id 3 in im1.png: " \
        "[40, 2, 5, 5], ...)" in summary
    assert "annotation id 4 " not in summary  # the first three examples only


def test_bad_categories_are_errors(tmp_path):
    path = write_coco(tmp_path, [_image(1)], [], [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])
    with pytest.raises(ValueError, match="category id 1 appears twice"):
        coco.CocoReader(path, str(tmp_path))
    path = write_coco(tmp_path, [_image(1)], [], [{"name": "no id"}])
    with pytest.raises(ValueError, match="ann.json: category .*no id.* has no integer 'id'"):
        coco.CocoReader(path, str(tmp_path))


def _bmp(width, height):
    """A 24-bit BMP (bottom-up rows padded to 4 bytes), written from the format's definition."""
    row = (3 * width + 3) // 4 * 4
    pixels = bytes(row * height)
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def _gif(width, height):
    """A one-frame GIF of 2 colours, all pixels 0, LZW-coded without compression: a clear code every two
    pixel codes keeps the codes 3 bits wide (the format's definition, GIF89a)."""
    codes = []
    for i in range(width * height):
        codes += [4, 0] if i % 2 == 0 else [0]  # 4 = clear
    bits = "".join(format(c, "03b")[::-1] for c in codes + [5])  # 5 = end of information; LSB first
    bits += "0" * (-len(bits) % 8)
    data = bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02" + blocks + b"\x00;")


def test_header_sizes_are_the_decoded_sizes(tmp_path):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(pixels).numpy()
    exif = b"\xff\xe1" + struct.pack(">H", 60002) + bytes(60000)  # a 60 KB APP1 segment before the frame
    files = {"a.png": tf.io.encode_png(pixels).numpy(), "b.jpg": jpeg,
             "c.jpg": tf.io.encode_jpeg(pixels, progressive=True).numpy(), "d.bmp": _bmp(53, 37),
             "e.png": tf.io.encode_png(pixels[..., :1]).numpy(), "f.jpg": jpeg[:2] + exif + jpeg[2:],
             "g.gif": _gif(53, 37)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2]
        assert image_files.sniff(str(tmp_path / name)) == (None, tuple(decoded)) == (None, (37, 53)), name
    (tmp_path / "x.txt").write_text(json.dumps({"not": "an image"}))
    assert image_files.sniff(str(tmp_path / "x.txt")) == ("not a PNG/JPEG/GIF/BMP file", None)
    (tmp_path / "empty.png").write_bytes(b"")
    assert image_files.sniff(str(tmp_path / "empty.png")) == ("empty file", None)
    assert image_files.sniff(str(tmp_path / "nope.png")) == ("file not found", None)
    assert image_files.sniff(str(tmp_path))[0].startswith("cannot be read")
    assert image_files.decode_problem(str(tmp_path / "a.png")) is None
    assert image_files.decode_problem(str(tmp_path / "x.txt")).startswith("cannot be decoded (Unknown image")
