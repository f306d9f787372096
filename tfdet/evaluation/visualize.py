"""Draw detections (boxes, class names and scores, translucent masks, keypoints with skeleton) on images
with NumPy, and write PNGs with tf.io.encode_png: no imaging library needed. Labels use a built-in 5x7
bitmap font (upper-case letters, digits and a little punctuation)."""

import os

import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

# 5x7 glyphs: seven rows of five bits (MSB = leftmost column).
_GLYPHS = {
    "A": "0E11111F111111", "B": "1E11111E11111E", "C": "0E11101010110E", "D": "1E11111111111E",
    "E": "1F10101E10101F", "F": "1F10101E101010", "G": "0E11101711110F", "H": "1111111F111111",
    "I": "0E04040404040E", "J": "0702020202120C", "K": "11121418141211", "L": "1010101010101F",
    "M": "111B1515111111", "N": "11111915131111", "O": "0E11111111110E", "P": "1E11111E101010",
    "Q": "0E11111115120D", "R": "1E11111E141211", "S": "0F10100E01011E", "T": "1F040404040404",
    "U": "1111111111110E", "V": "11111111110A04", "W": "1111111515150A", "X": "11110A040A1111",
    "Y": "11110A04040404", "Z": "1F01020408101F",
    "0": "0E11131519110E", "1": "040C040404040E", "2": "0E11010204081F", "3": "1F02040201110E",
    "4": "02060A121F0202", "5": "1F101E0101110E", "6": "0608101E11110E", "7": "1F010204080808",
    "8": "0E11110E11110E", "9": "0E11110F01020C",
    ".": "00000000000C0C", "-": "0000001F000000", "_": "0000000000001F", ":": "000C0C000C0C00",
    " ": "00000000000000", "%": "18190204081303", "/": "00010204081000", "(": "02040808080402",
    ")": "08040202020408", "?": "0E110102040004",
}
_GLYPHS = {c: np.array([[(int(h[2 * r:2 * r + 2], 16) >> (4 - b)) & 1 for b in range(5)]
                        for r in range(7)], bool) for c, h in _GLYPHS.items()}
GLYPH_W, GLYPH_H = 5, 7


def palette(n):
    """n distinct, saturated uint8 RGB colours (golden-ratio hues), the same for the same n."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = tf.image.hsv_to_rgb(np.stack([hues, np.full(n, 0.85), np.full(n, 0.95)], -1).astype(np.float32))
    return (rgb.numpy() * 255).round().astype(np.uint8).reshape(n, 3)


def text_mask(text, scale=1):
    """bool [7 * scale, 6 * len(text) * scale] pixels of `text` in the built-in font (1 column spacing)."""
    rows = np.zeros((GLYPH_H, max(len(text), 1) * (GLYPH_W + 1)), bool)
    for i, ch in enumerate(text.upper()):
        rows[:, i * (GLYPH_W + 1):i * (GLYPH_W + 1) + GLYPH_W] = _GLYPHS.get(ch, _GLYPHS["?"])
    return np.kron(rows, np.ones((scale, scale), bool))


def _fill(image, y0, y1, x0, x1, colour, alpha=1.0):
    h, w = image.shape[:2]
    y0, y1, x0, x1 = max(int(y0), 0), min(int(y1), h), max(int(x0), 0), min(int(x1), w)
    if y1 > y0 and x1 > x0:
        region = image[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] = np.round(region * (1 - alpha) + np.asarray(colour, np.float32) * alpha)


def draw_box(image, box, colour, thickness=2):
    x1, y1, x2, y2 = (int(np.floor(v)) for v in box)
    _fill(image, y1, y1 + thickness, x1, x2 + 1, colour)
    _fill(image, y2 - thickness + 1, y2 + 1, x1, x2 + 1, colour)
    _fill(image, y1, y2 + 1, x1, x1 + thickness, colour)
    _fill(image, y1, y2 + 1, x2 - thickness + 1, x2 + 1, colour)


def draw_text(image, text, x, y, colour, background, scale=1):
    """Text with its top-left corner at (x, y) on a filled background box (1 pixel margin)."""
    pixels = text_mask(text, scale)
    h, w = pixels.shape
    _fill(image, y, y + h + 2, x, x + w + 1, background)
    x, y = int(x) + 1, int(y) + 1
    ys, xs = np.nonzero(pixels)
    ys, xs = ys + y, xs + x
    ok = (ys >= 0) & (ys < image.shape[0]) & (xs >= 0) & (xs < image.shape[1])
    image[ys[ok], xs[ok]] = colour


def draw_mask(image, mask, colour, alpha=0.45):
    on = mask.astype(bool)
    image[on] = np.round(image[on].astype(np.float32) * (1 - alpha) + np.asarray(colour, np.float32) * alpha)


def draw_line(image, p, q, colour, thickness=2):
    n = int(np.ceil(max(abs(q[0] - p[0]), abs(q[1] - p[1])))) + 1
    for t in np.linspace(0.0, 1.0, n):
        x, y = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        _fill(image, np.floor(y - thickness / 2), np.floor(y - thickness / 2) + thickness,
              np.floor(x - thickness / 2), np.floor(x - thickness / 2) + thickness, colour)


def draw_detections(image, boxes, labels, colours, masks=None, keypoints=None, skeleton=(), radius=2):
    """A copy of `image` (uint8 [H, W, 3]) with the detections drawn.

    Args:
      boxes: [N, 4] (x1, y1, x2, y2) image pixels. labels: N strings (e.g. "dog 0.87").
      colours: [N, 3] uint8. masks: optional [N, H, W] 0/1. keypoints: optional [N, K, 3] (x, y, v/score)
        in continuous pixel coordinates, drawn where the third value is > 0. skeleton: 0-based pairs.
    """
    out = np.array(image, np.uint8, copy=True)
    for i in range(len(boxes)):
        if masks is not None:
            draw_mask(out, masks[i], colours[i])
    for i in range(len(boxes)):
        draw_box(out, boxes[i], colours[i])
        if keypoints is not None:
            kps = keypoints[i]
            for a, b in skeleton:
                if kps[a, 2] > 0 and kps[b, 2] > 0:
                    draw_line(out, kps[a, :2], kps[b, :2], colours[i])
            for x, y, v in kps:
                if v > 0:
                    _fill(out, y - radius, y + radius + 1, x - radius, x + radius + 1, (255, 255, 255))
                    _fill(out, y - radius + 1, y + radius, x - radius + 1, x + radius, colours[i])
        x1, y1 = boxes[i][0], boxes[i][1]
        label_y = y1 - GLYPH_H - 2 if y1 >= GLYPH_H + 2 else y1 + 2
        draw_text(out, labels[i], x1, label_y, (255, 255, 255), colours[i])
    return out


def write_png(path, image):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def _enlarge(array, factor):
    """Nearest-neighbour upscaling of the two leading pixel axes of `array` by an integer factor."""
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1) if factor > 1 else array


def draw_results(image, dets, labels, colours, skeleton=(), min_size=480):
    """A copy of `image` (uint8 [H, W, 3]) with COCO-format results `dets` (bbox xywh; segmentation RLE
    and keypoints when every result has them) drawn with `labels` and `colours` (one per result).
    Images whose long edge is under `min_size` are enlarged by an integer factor first (nearest,
    pixel-exact) so that the labels stay legible."""
    factor = max(1, -(-int(min_size) // max(image.shape[:2])))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)], np.float64).reshape(-1, 4)
    masks = keypoints = None
    if dets and all("segmentation" in d for d in dets):
        masks = [_enlarge(mask_utils.decode(_rle(d["segmentation"])), factor) for d in dets]
    if dets and all("keypoints" in d for d in dets):
        keypoints = np.array([d["keypoints"] for d in dets], np.float64).reshape(len(dets), -1, 3)
        keypoints[..., :2] = (keypoints[..., :2] + 0.5) * factor  # COCO pixel indices -> pixel centres
    colours = np.asarray(colours, np.uint8).reshape(-1, 3)
    return draw_detections(_enlarge(image, factor), boxes * factor, labels, colours, masks, keypoints, skeleton)


def render_results(reader, results, folder, count, score_threshold=0.3, min_size=480):
    """Writes PNGs of the first `count` images of `reader` with their COCO `results` (score >=
    threshold) to `folder` as <image id>.png (see draw_results for `min_size`); returns the paths."""
    by_image = {}
    for r in results:
        if r["score"] >= score_threshold:
            by_image.setdefault(r["image_id"], []).append(r)
    colours = palette(reader.num_classes)
    cats = {c["id"]: c for c in reader.coco.dataset["categories"]}
    paths = []
    for rec in reader.records[:count]:
        image = tf.io.decode_image(tf.io.read_file(rec.file_name), channels=3, expand_animations=False).numpy()
        dets = sorted(by_image.get(rec.image_id, []), key=lambda r: r["score"])
        classes = [reader.category_to_class[d["category_id"]] for d in dets]
        labels = [f"{reader.class_names[c]} {d['score']:.2f}" for c, d in zip(classes, dets)]
        skeleton = [(a - 1, b - 1) for a, b in cats[dets[0]["category_id"]].get("skeleton", [])] if dets else []
        drawn = draw_results(image, dets, labels, colours[classes], skeleton, min_size)
        path = os.path.join(folder, f"{rec.image_id}.png")
        write_png(path, drawn)
        paths.append(path)
    return paths


def _rle(seg):
    rle = dict(seg)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle
