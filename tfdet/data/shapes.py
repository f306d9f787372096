"""The embedded default dataset: deterministic synthetic "shapes" written in real COCO format.

Each image holds 1..`max_shapes` non-overlapping filled shapes on a noisy background, one of three
categories: 1 "circle", 2 "square", 3 "triangle" (apex up). Every instance has a COCO bbox (xywh), a
polygon segmentation, `area` and 5 keypoints (COCO integer-pixel convention, all visible):

    0 "center"  centre of the shape's box
    1 "left"    2 "right"    3 "top"    4 "bottom"
                the extreme points of the outline (the mean of the vertices reaching the extreme)

A horizontal flip swaps "left" and "right" (`FLIP_MAP`; `tfdet.data.coco.keypoint_flip_map` derives the
same map from the names). Each image also has a semantic map (PNG, `semantic/<stem>.png`): 0 background,
1 + class index where a shape is, 255 = ignore (not produced by this generator).

Layout under the cache folder (default `$TFDET_DATA_DIR/shapes`, else `~/.cache/tfdet/shapes`):

    stamp.json                          version + parameters; a mismatch regenerates the data
    annotations/instances_{train,val}.json
    {train,val}/images/000000.png       (or .jpg)
    {train,val}/semantic/000000.png

Generation is deterministic (image i of a split depends only on (seed, split, i)) and atomic: it is
written to a temporary sibling folder and renamed into place, so a killed run never leaves half a
dataset, and concurrent first uses (several workers) agree on one copy.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from pycocotools import mask as mask_utils

VERSION = 1
CATEGORIES = ("circle", "square", "triangle")
KEYPOINT_NAMES = ("center", "left", "right", "top", "bottom")
FLIP_MAP = (0, 2, 1, 3, 4)
SKELETON = ((1, 2), (1, 3), (1, 4), (1, 5))  # 1-based, COCO style
SPLITS = ("train", "val")
DEFAULTS = dict(seed=0, num_train=256, num_val=64, min_image_size=112, max_image_size=160, max_shapes=4,
                min_shape_size=20, max_shape_size=56, image_format="png")


@dataclasses.dataclass(frozen=True)
class ShapesSplit:
    ann_file: str
    image_dir: str
    semantic_dir: str


def default_root():
    base = os.environ.get("TFDET_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tfdet")
    return os.path.join(base, "shapes")


def ensure_shapes(root=None, **params):
    """Generates the dataset into `root` unless an identical one (same stamp) is there; returns
    {"train": ShapesSplit, "val": ShapesSplit}. `params` override `DEFAULTS`."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown shapes parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    params = dict(DEFAULTS, **params)
    if params["image_format"] not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {params['image_format']!r}.")
    if params["max_shape_size"] + 4 > params["min_image_size"]:
        raise ValueError("max_shape_size must be at least 4 pixels smaller than min_image_size.")
    root = os.path.abspath(root or default_root())
    stamp = {"version": VERSION, "params": params}
    if _read_stamp(root) != stamp:
        parent = os.path.dirname(root)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=parent)
        try:
            _generate(tmp, params)
            with open(os.path.join(tmp, "stamp.json"), "w") as f:
                json.dump(stamp, f, indent=1, sort_keys=True)
            if os.path.exists(root):  # an outdated copy (or a concurrent writer's fresh one)
                if _read_stamp(root) != stamp:
                    old = tempfile.mkdtemp(prefix=os.path.basename(root) + ".old-", dir=parent)
                    try:
                        os.rename(root, os.path.join(old, "data"))
                    except OSError:
                        pass
                    shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(tmp, root)
            except OSError:
                if _read_stamp(root) != stamp:  # lost a race to a writer of other parameters
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {s: ShapesSplit(os.path.join(root, "annotations", f"instances_{s}.json"),
                           os.path.join(root, s, "images"), os.path.join(root, s, "semantic")) for s in SPLITS}


def _read_stamp(root):
    try:
        with open(os.path.join(root, "stamp.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _polygon(kind, x1, y1, size):
    """Flat [x, y, ...] outline of a shape whose box is (x1, y1, x1 + size, y1 + size)."""
    x2, y2, cx, cy = x1 + size, y1 + size, x1 + size / 2, y1 + size / 2
    if kind == "circle":
        t = np.arange(32) * (2 * np.pi / 32)
        pts = np.stack([cx + size / 2 * np.cos(t), cy + size / 2 * np.sin(t)], 1)
    elif kind == "square":
        pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    else:
        pts = np.array([[cx, y1], [x2, y2], [x1, y2]])
    return np.round(pts, 3)


def _keypoints(pts):
    """5 keypoints (see module doc) in COCO's integer-pixel convention (continuous - 0.5), v = 2."""
    def extreme(axis, fn):
        v = fn(pts[:, axis])
        return pts[np.abs(pts[:, axis] - v) < 1e-6].mean(0)
    lo, hi = pts.min(0), pts.max(0)
    points = [(lo + hi) / 2, extreme(0, np.min), extreme(0, np.max), extreme(1, np.min), extreme(1, np.max)]
    return [float(round(c, 3)) for p in points for c in (p[0] - 0.5, p[1] - 0.5, 2)]


def _place(rng, height, width, params):
    """Non-overlapping (kind, x1, y1, size) for one image."""
    placed = []
    for _ in range(int(rng.integers(1, params["max_shapes"] + 1))):
        for _ in range(50):
            size = float(rng.integers(params["min_shape_size"], params["max_shape_size"] + 1))
            x1 = float(rng.integers(1, width - size - 1))
            y1 = float(rng.integers(1, height - size - 1))
            if all(x1 > a + s + 2 or a > x1 + size + 2 or y1 > b + s + 2 or b > y1 + size + 2
                   for _, a, b, s in placed):
                placed.append((CATEGORIES[int(rng.integers(len(CATEGORIES)))], x1, y1, size))
                break
    return placed


def _generate(out, params):
    import tensorflow as tf  # only needed to encode the images

    categories = [{"id": i + 1, "name": n, "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
                   "skeleton": [list(e) for e in SKELETON]} for i, n in enumerate(CATEGORIES)]
    os.makedirs(os.path.join(out, "annotations"))
    ext = params["image_format"]
    for split_index, split in enumerate(SPLITS):
        for sub in ("images", "semantic"):
            os.makedirs(os.path.join(out, split, sub))
        images, annotations = [], []
        for i in range(params[f"num_{split}"]):
            rng = np.random.default_rng([params["seed"], split_index, i])
            h, w = (int(v) for v in rng.integers(params["min_image_size"], params["max_image_size"] + 1, 2))
            background = rng.integers(0, 256, 3)
            image = np.clip(background + rng.normal(0, 12, (h, w, 3)), 0, 255)
            semantic = np.zeros((h, w), np.uint8)
            image_id = i + 1
            for kind, x1, y1, size in _place(rng, h, w, params):
                pts = _polygon(kind, x1, y1, size)
                poly = [float(c) for c in pts.reshape(-1)]
                rle = mask_utils.frPyObjects([poly], h, w)[0]
                mask = mask_utils.decode(rle).astype(bool)
                color = (background + rng.integers(80, 176, 3)) % 256  # far from the background
                image[mask] = np.clip(color + rng.normal(0, 12, (int(mask.sum()), 3)), 0, 255)
                label = CATEGORIES.index(kind)
                semantic[mask] = label + 1
                lo, hi = pts.min(0), pts.max(0)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                    "bbox": [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])],
                    "segmentation": [poly], "area": float(mask_utils.area(rle)), "iscrowd": 0,
                    "keypoints": _keypoints(pts), "num_keypoints": len(KEYPOINT_NAMES)})
            name = f"{i:06d}"
            pixels = tf.constant(image.astype(np.uint8))
            encoded = tf.io.encode_png(pixels) if ext == "png" else tf.io.encode_jpeg(pixels, quality=95)
            tf.io.write_file(os.path.join(out, split, "images", f"{name}.{ext}"), encoded)
            tf.io.write_file(os.path.join(out, split, "semantic", f"{name}.png"),
                             tf.io.encode_png(tf.constant(semantic[..., None])))
            images.append({"id": image_id, "file_name": f"{name}.{ext}", "height": h, "width": w})
        with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"info": {"description": "tfdet synthetic shapes", "version": VERSION},
                       "images": images, "annotations": annotations, "categories": categories}, f)
