"""Drawing: boxes, labels, translucent masks, keypoints with skeleton, PNG output."""

import numpy as np
import tensorflow as tf

from tfdet.evaluation import visualize

GREY = 90


def _canvas(h=80, w=120):
    return np.full((h, w, 3), GREY, np.uint8)


def test_box_outline_and_label_are_drawn_where_the_box_is():
    colour = np.array([[200, 30, 40]], np.uint8)
    out = visualize.draw_detections(_canvas(), np.array([[20.0, 30.0, 70.0, 60.0]]), ["circle 0.95"], colour)
    changed = np.any(out != GREY, axis=-1)
    # The four edges carry the colour; the inside of the box and the far corner stay background.
    for y, x in ((30, 45), (60, 45), (45, 20), (45, 70)):
        assert tuple(out[y, x]) == (200, 30, 40), (y, x)
    assert not changed[40:55, 25:65].any()
    assert not changed[70:, 100:].any()
    # The label sits above the box: white glyph pixels on the colour inside rows 21..29.
    label = out[21:30, 20:90]
    assert np.any(np.all(label == 255, axis=-1)) and np.any(np.all(label == (200, 30, 40), axis=-1))
    assert not changed[:20].any()


def test_mask_is_translucent_and_keypoints_with_skeleton():
    mask = np.zeros((1, 80, 120), np.uint8)
    mask[0, 35:55, 30:60] = 1
    kps = np.array([[[10.5, 10.5, 1.0], [50.5, 10.5, 1.0], [90.5, 70.5, 0.0]]])
    out = visualize.draw_detections(_canvas(), np.array([[25.0, 32.0, 65.0, 58.0]]), ["x"],
                                    np.array([[0, 255, 0]], np.uint8), masks=mask, keypoints=kps,
                                    skeleton=[(0, 1), (1, 2)])
    inside = out[45, 45].astype(int)
    assert inside[1] > GREY and inside[0] < GREY  # tinted green, still showing the grey below
    assert 0 < inside[1] < 255
    assert tuple(out[20, 100]) == (GREY,) * 3  # outside everything
    assert tuple(out[10, 30]) == (0, 255, 0)  # on the skeleton line between the two visible points
    assert tuple(out[70, 90]) == (GREY,) * 3  # the invisible keypoint is not drawn
    assert tuple(out[40, 70]) == (GREY,) * 3  # nor its bone


def test_font_covers_labels_and_unknown_characters():
    text = visualize.text_mask("Circle 0.95%")
    assert text.shape == (7, 12 * 6) and text.any()
    np.testing.assert_array_equal(visualize.text_mask("@"), visualize.text_mask("?"))
    np.testing.assert_array_equal(visualize.text_mask("a"), visualize.text_mask("A"))
    assert visualize.text_mask("ab", scale=2).shape == (14, 24)


def test_png_round_trip(tmp_path):
    image = visualize.draw_detections(_canvas(40, 50), np.array([[5.0, 12.0, 30.0, 35.0]]), ["a"],
                                      visualize.palette(3)[1:2])
    path = str(tmp_path / "sub" / "x.png")
    visualize.write_png(path, image)
    np.testing.assert_array_equal(tf.io.decode_png(tf.io.read_file(path)).numpy(), image)


def test_palette_distinct():
    colours = visualize.palette(80)
    assert colours.shape == (80, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 80


def test_render_results_draws_detections(reader, tmp_path):
    rec = reader.records[0]
    x1, y1, x2, y2 = (float(v) for v in rec.boxes[0])
    dets = [{"image_id": rec.image_id, "category_id": reader.category_ids[0], "score": 0.9,
             "bbox": [x1, y1, x2 - x1, y2 - y1]},
            {"image_id": rec.image_id, "category_id": reader.category_ids[0], "score": 0.1, "bbox": [0, 0, 5, 5]}]
    (path,) = visualize.render_results(reader, dets, str(tmp_path), 1, score_threshold=0.5, min_size=0)
    drawn = tf.io.decode_png(tf.io.read_file(path)).numpy()
    original = tf.io.decode_image(tf.io.read_file(rec.file_name), channels=3).numpy()
    assert drawn.shape == original.shape
    colour = visualize.palette(reader.num_classes)[0]
    assert np.all(drawn[int(y2) - 1, int(x1) + 2:int(x2) - 2] == colour)  # bottom edge
    # Nothing else is drawn (the low-score box is not): changes stay within the box and its label.
    label_w = visualize.text_mask(f"{reader.class_names[0]} 0.90").shape[1] + 2
    changed = np.any(drawn != original, axis=-1)
    region = np.zeros_like(changed)
    top = int(y1) - visualize.GLYPH_H - 2 if y1 >= visualize.GLYPH_H + 2 else int(y1)
    region[max(top, 0):int(y2) + 1, int(x1):max(int(x2), int(x1) + label_w) + 1] = True
    assert changed.any() and not (changed & ~region).any()


def test_render_results_enlarges_small_images(reader, tmp_path):
    """A small image is drawn at an integer multiple of its size: every original pixel becomes a
    factor x factor block, the box lands on the scaled coordinates."""
    rec = reader.records[0]
    x1, y1, x2, y2 = (float(v) for v in rec.boxes[0])
    det = {"image_id": rec.image_id, "category_id": reader.category_ids[0], "score": 0.9,
           "bbox": [x1, y1, x2 - x1, y2 - y1]}
    original = tf.io.decode_image(tf.io.read_file(rec.file_name), channels=3).numpy()
    h, w = original.shape[:2]
    (path,) = visualize.render_results(reader, [det], str(tmp_path), 1, min_size=4 * max(h, w))
    drawn = tf.io.decode_png(tf.io.read_file(path)).numpy()
    assert drawn.shape == (4 * h, 4 * w, 3)
    untouched = np.repeat(np.repeat(original, 4, axis=0), 4, axis=1)
    changed = np.any(drawn != untouched, axis=-1)
    assert not changed[int(4 * y2) + 4:].any()  # nothing below the scaled box
    colour = visualize.palette(reader.num_classes)[0]
    assert np.all(drawn[int(4 * y2) - 1, int(4 * x1) + 2:int(4 * x2) - 2] == colour)  # its bottom edge
