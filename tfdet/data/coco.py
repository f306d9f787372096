"""COCO-format reader built on pycocotools: one `ImageRecord` of NumPy arrays per image.

Conventions (DESIGN.md decision 2), applied here at the data boundary and nowhere else:
  * boxes are (x1, y1, x2, y2) float32 in absolute pixels, converted from COCO's (x, y, w, h), no +1;
  * classes are contiguous int32 in [0, C): class i is the i-th category id in increasing order
    (`class_to_category` / `category_to_class` map both ways, `class_names` names them);
  * keypoints are [N, K, 3] float32 (x, y, v). COCO stores keypoints as integer pixel indices, so the
    reader adds 0.5 to x and y of labelled points (v > 0) to put them in the same continuous coordinates
    as boxes (pixel i covers [i, i + 1]); unlabelled points are (0, 0, 0). Subtract 0.5 when writing
    COCO results. `keypoint_flip_map` swaps the `left_*`/`right_*` names for horizontal flips;
  * crowd regions (`iscrowd = 1`) are kept, flagged in `is_crowd`, so matching can ignore them;
  * masks (polygons, compressed and uncompressed RLE) are decoded on demand by `load_masks` with
    pycocotools.mask into uint8 [N, H, W] 0/1 arrays.

Problems with the data never kill a run: an annotation outside the image is clipped, one that is
malformed, degenerate or of an unknown category is dropped, and (with `check_images`) an unreadable
image is skipped; each is logged with its image file / annotation id and counted in `stats`.
Problems with the *inputs* are errors that name the file: a missing or unparsable annotation file,
one without images or categories, a missing image.
"""

import collections
import contextlib
import dataclasses
import io
import json
import logging
import os
import re

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

log = logging.getLogger(__name__)

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


@dataclasses.dataclass
class ImageRecord:
    """One image and its N annotations (NumPy, original image coordinates)."""
    image_id: int
    file_name: str             # absolute path of the image file
    height: int
    width: int
    boxes: np.ndarray          # [N, 4] float32 (x1, y1, x2, y2)
    classes: np.ndarray        # [N] int32 in [0, C)
    is_crowd: np.ndarray       # [N] bool
    keypoints: np.ndarray      # [N, K, 3] float32 (x, y, v); K = 0 without keypoints
    ann_ids: np.ndarray        # [N] int64
    segmentations: list        # N raw COCO segmentations (None where absent)
    semantic_file: str = ""    # per-image semantic map (PNG, 255 = ignore) or ""

    @property
    def num_instances(self):
        return len(self.classes)


def keypoint_flip_map(names):
    """[K] int32 permutation for a horizontal flip: index k takes the point named with left<->right
    swapped (`left_eye` <-> `right_eye`, `left` <-> `right`); points without a side map to themselves."""
    index = {name: k for k, name in enumerate(names)}
    swap = {"left": "right", "right": "left"}
    flip = []
    for name in names:
        other = re.sub(r"(?<![a-z])(left|right)(?![a-z])", lambda m: swap[m.group(1)], name)
        if other != name and other not in index:
            raise ValueError(f"keypoint {name!r} has no mirror keypoint {other!r} among {list(names)}.")
        flip.append(index[other])
    return np.asarray(flip, np.int32)


def _load_json(ann_file):
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotation file {ann_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"COCO annotation file {ann_file} has no 'images' list.")
    if not data.get("categories"):
        raise ValueError(f"COCO annotation file {ann_file} has no 'categories': the classes are unknown.")
    data.setdefault("annotations", [])
    return data


def _image_problem(path, decode):
    """None if the image file looks readable, else the reason."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return str(e)
    if not any(head.startswith(m) for m in _MAGIC):
        return "not a PNG/JPEG/GIF/BMP file" if head else "empty file"
    if decode:
        import tensorflow as tf
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            return f"cannot be decoded ({e.message.splitlines()[0]})"
    return None


class CocoReader:
    """Reads a COCO instances (or person keypoints) json and its image folder.

    Args:
      ann_file: path of the COCO json.
      image_dir: folder the images' `file_name`s are relative to.
      skip_empty: drop images without any non-crowd instance (training); keep them for evaluation.
      semantic_dir: optional folder of per-image semantic maps named like the image with `.png`.
      check_images: "header" (the file exists and starts like an image), "decode" (full decode with
        TensorFlow, slow) or "none". A missing image is an error; an unreadable one is skipped.
      min_box_size: boxes narrower or shorter than this (after clipping) are dropped.
    """

    def __init__(self, ann_file, image_dir, *, skip_empty=False, semantic_dir=None, check_images="header",
                 min_box_size=1.0):
        if check_images not in ("header", "decode", "none"):
            raise ValueError(f"check_images must be 'header', 'decode' or 'none', got {check_images!r}.")
        self.ann_file = ann_file
        self.image_dir = image_dir
        self.stats = collections.Counter()
        data = _load_json(ann_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self.category_to_class = {cid: i for i, cid in enumerate(self.category_ids)}
        self.class_to_category = dict(enumerate(self.category_ids))
        kp_cats = [c for c in cats if c.get("keypoints")]
        self.keypoint_names = list(kp_cats[0]["keypoints"]) if kp_cats else []
        if any(list(c["keypoints"]) != self.keypoint_names for c in kp_cats):
            raise ValueError(f"{ann_file}: categories declare different keypoint lists; one list is supported.")
        self.keypoint_flip_map = keypoint_flip_map(self.keypoint_names)
        self.min_box_size = float(min_box_size)

        self.records = []
        for image_id in sorted(self.coco.imgs):
            record = self._record(self.coco.imgs[image_id], semantic_dir, check_images)
            if record is None:
                continue
            if skip_empty and not np.any(~record.is_crowd):
                self.stats["skipped_empty_images"] += 1
                continue
            self.records.append(record)
        problems = {k: v for k, v in self.stats.items() if k != "skipped_empty_images"}
        if problems:
            log.warning("%s: %s (details logged above).", ann_file,
                        ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(problems.items())))

    @property
    def num_classes(self):
        return len(self.category_ids)

    @property
    def num_keypoints(self):
        return len(self.keypoint_names)

    def __len__(self):
        return len(self.records)

    def _record(self, img, semantic_dir, check_images):
        try:
            image_id = int(img["id"])
            file_name = os.path.join(self.image_dir, img["file_name"])
            height, width = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.ann_file}: image entry {img!r} lacks a valid {e}; COCO images need "
                             f"'id', 'file_name', 'height' and 'width'.") from None
        if check_images != "none":
            if not os.path.isfile(file_name):
                raise FileNotFoundError(f"{self.ann_file}: image id {image_id} file not found: {file_name}")
            problem = _image_problem(file_name, decode=check_images == "decode")
            if problem:
                log.warning("skipping image id %d (%s): %s", image_id, file_name, problem)
                self.stats["corrupt_images"] += 1
                return None
        semantic_file = ""
        if semantic_dir:
            semantic_file = os.path.join(semantic_dir, os.path.splitext(img["file_name"])[0] + ".png")
            if check_images != "none" and not os.path.isfile(semantic_file):
                raise FileNotFoundError(f"{self.ann_file}: image id {image_id} semantic map not found: "
                                        f"{semantic_file}")
        k = self.num_keypoints
        boxes, classes, crowd, kps, ann_ids, segs = [], [], [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            box = self._box(ann, height, width, file_name)
            if box is None:
                continue
            keypoints = np.zeros((k, 3), np.float32)
            raw = ann.get("keypoints")
            if k and raw:
                raw = np.asarray(raw, np.float32).reshape(-1, 3)
                if raw.shape[0] != k:
                    log.warning("annotation id %s (%s): %d keypoints, expected %d; ignoring them",
                                ann.get("id"), file_name, raw.shape[0], k)
                    self.stats["bad_keypoints"] += 1
                else:
                    labelled = raw[:, 2] > 0
                    keypoints[labelled, :2] = raw[labelled, :2] + 0.5
                    keypoints[:, 2] = raw[:, 2]
            boxes.append(box)
            classes.append(self.category_to_class[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
            kps.append(keypoints)
            ann_ids.append(int(ann.get("id", -1)))
            segs.append(ann.get("segmentation") or None)
        return ImageRecord(
            image_id=image_id, file_name=file_name, height=height, width=width,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            classes=np.asarray(classes, np.int32), is_crowd=np.asarray(crowd, bool),
            keypoints=np.asarray(kps, np.float32).reshape(len(kps), k, 3),
            ann_ids=np.asarray(ann_ids, np.int64), segmentations=segs, semantic_file=semantic_file)

    def _box(self, ann, height, width, file_name):
        """The clipped (x1, y1, x2, y2) of an annotation, or None (logged and counted) to drop it."""
        ann_id = ann.get("id")
        if ann.get("category_id") not in self.category_to_class:
            log.warning("dropping annotation id %s (%s): unknown category_id %r", ann_id, file_name,
                        ann.get("category_id"))
            self.stats["dropped_annotations"] += 1
            return None
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            log.warning("dropping annotation id %s (%s): malformed bbox %r", ann_id, file_name, bbox)
            self.stats["dropped_annotations"] += 1
            return None
        if not np.all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
            log.warning("dropping annotation id %s (%s): degenerate bbox %r", ann_id, file_name, bbox)
            self.stats["dropped_annotations"] += 1
            return None
        box = np.array([x, y, x + w, y + h], np.float32)
        clipped = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
        if np.any(clipped != box):
            log.warning("clipping annotation id %s (%s): bbox %r extends outside the %dx%d image",
                        ann_id, file_name, bbox, width, height)
            self.stats["clipped_boxes"] += 1
        if min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < self.min_box_size:
            log.warning("dropping annotation id %s (%s): bbox %r is smaller than %g pixel after clipping",
                        ann_id, file_name, bbox, self.min_box_size)
            self.stats["dropped_annotations"] += 1
            return None
        return clipped

    def load_masks(self, record):
        """uint8 [N, H, W] 0/1 masks of `record`'s instances, decoded with pycocotools.mask.

        Polygons, uncompressed RLE (list counts) and compressed RLE are accepted; an instance without a
        (valid) segmentation gets its box filled (counted in `stats["box_masks"]`)."""
        h, w = record.height, record.width
        masks = np.zeros((record.num_instances, h, w), np.uint8)
        for i, seg in enumerate(record.segmentations):
            if seg is not None:
                try:
                    masks[i] = decode_segmentation(seg, h, w)
                    continue
                except (ValueError, TypeError, KeyError) as e:
                    log.warning("annotation id %d (%s): bad segmentation (%s); using its box as mask",
                                record.ann_ids[i], record.file_name, e)
            x1, y1, x2, y2 = record.boxes[i]
            masks[i, int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = 1
            self.stats["box_masks"] += 1
        return masks


def decode_segmentation(seg, height, width):
    """uint8 [height, width] mask of one COCO segmentation (polygon list, RLE or uncompressed RLE)."""
    if isinstance(seg, list):  # polygons: a list of flat [x, y, x, y, ...] lists
        polygons = [p for p in seg if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, height, width)
    elif isinstance(seg, dict):  # compressed RLE
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported COCO segmentation of type {type(seg).__name__}")
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation of size {mask.shape} does not match the {height}x{width} image")
    return mask.astype(np.uint8)
