"""COCO-format reader built on pycocotools: one `ImageRecord` of NumPy arrays per image.

Conventions (docs/design.md, Boxes), applied here at the data boundary and nowhere else:
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

Problems with the data never kill a run, and none passes silently: every record that is dropped or
repaired is counted by reason in the reader's `report` (`stats` holds the counts by kind) and the reader
logs one summary of them, with the first few image files / annotation ids of each reason:
  * the json's structure (`tfdet.data.coco_checks`): invalid or repeated image entries, orphan
    annotations, annotations without an id or repeating one;
  * the image files: a missing file, one that is no image, or (`check_images="decode"`) one that does not
    decode is skipped; a size in the json that differs from the file's header is replaced by the file's
    (here and in `coco`, so evaluation sees it too);
  * the annotations: an unknown category, a malformed, degenerate or (after clipping to the image) too
    small box is dropped, a box reaching outside the image is clipped, keypoints of the wrong count are
    ignored, a segmentation without a usable polygon (fewer than 3 points) or of the wrong size is
    replaced by the instance's box.
A data set with nothing usable stops with `DataError` (a ValueError) holding that summary, or with
FileNotFoundError when none of its image files exists (a wrong image folder). Problems with the *inputs*
are errors that name the file: a missing or unparsable annotation file, one without images or
categories, a bad category, a missing semantic map.
"""

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

from tfdet.data import coco_checks, image_files
from tfdet.data.report import DataError, DataReport

log = logging.getLogger(__name__)


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
    segmentations: list        # N raw COCO segmentations (None where absent or unusable)
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
    if not data.get("categories") or not isinstance(data["categories"], list):
        raise ValueError(f"COCO annotation file {ann_file} has no 'categories': the classes are unknown.")
    if not isinstance(data.setdefault("annotations", []), list):
        raise ValueError(f"COCO annotation file {ann_file}: 'annotations' is not a list.")
    return data


class CocoReader:
    """Reads a COCO instances (or person keypoints) json and its image folder.

    Args:
      ann_file: path of the COCO json.
      image_dir: folder the images' `file_name`s are relative to.
      skip_empty: drop images without any non-crowd instance (training); keep them for evaluation.
      semantic_dir: optional folder of per-image semantic maps named like the image with `.png`.
      check_images: "header" (the file exists and starts like an image, whose size is read from the header;
        then images are decoded in order until one decodes, so that a data set of undecodable files
        stops here), "decode" (every image is decoded with TensorFlow: slow) or "none" (no file is read).
      min_box_size: boxes narrower or shorter than this (after clipping) are dropped.

    Attributes: `records` (the usable images), `coco` (the pycocotools index of the checked json),
    `report` (what was dropped or repaired, see tfdet.data.report) and `stats` (its counts by kind).
    """

    def __init__(self, ann_file, image_dir, *, skip_empty=False, semantic_dir=None, check_images="header",
                 min_box_size=1.0):
        if check_images not in ("header", "decode", "none"):
            raise ValueError(f"check_images must be 'header', 'decode' or 'none', got {check_images!r}.")
        self.ann_file = ann_file
        self.image_dir = image_dir
        self.report = DataReport(ann_file)
        self.stats = self.report.counts
        data = _load_json(ann_file)
        self.report.images = len(data["images"])
        cats = coco_checks.check_categories(data["categories"], ann_file)
        data = coco_checks.clean_dataset(dict(data, categories=cats), self.report)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        self.category_ids = [c["id"] for c in cats]
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
                self.report.add("skipped_empty_images", "no instance that is not a crowd region",
                                coco_checks.describe_image(self.coco.imgs[image_id]))
                continue
            self.records.append(record)
        if check_images == "header":
            self._drop_undecodable_head()
        self.report.usable = len(self.records)
        if not self.records and self.report.images:
            self._fail(len(data["images"]))
        self.report.log()

    @property
    def num_classes(self):
        return len(self.category_ids)

    @property
    def num_keypoints(self):
        return len(self.keypoint_names)

    def __len__(self):
        return len(self.records)

    def _fail(self, num_entries):
        missing = self.report.examples_of("missing_images")
        if num_entries and self.stats["missing_images"] == num_entries:
            raise FileNotFoundError(f"{self.ann_file}: none of its {num_entries} image files exists under "
                                    f"{self.image_dir} (e.g. {missing[0]}); is the image folder right?")
        raise DataError(f"nothing usable in the data set: {self.report.summary(one_line=True)}")

    def _drop_undecodable_head(self):
        """Decodes the images in order until one decodes; those before it are dropped and counted. Cheap
        (one decode when the data is sound), and a data set whose every file is garbage behind a valid
        header stops here instead of in an input pipeline that would drop every image forever."""
        while self.records:
            problem = image_files.decode_problem(self.records[0].file_name)
            if problem is None:
                return
            rec = self.records.pop(0)
            self.report.add("corrupt_images", "cannot be decoded", f"image id {rec.image_id} ({rec.file_name})")
            log.debug("image id %d (%s): %s", rec.image_id, rec.file_name, problem)

    def _check_file(self, img, file_name, check_images):
        """(height, width) to use for the image, or None (reported) when the file is unusable."""
        height, width = img["height"], img["width"]
        if check_images == "none":
            return height, width
        where = f"image id {img['id']} ({file_name})"
        problem, size = image_files.sniff(file_name)
        if problem == "file not found":
            self.report.add("missing_images", problem, where)
            return None
        if problem is None and check_images == "decode":
            problem = image_files.decode_problem(file_name)
        if problem:
            self.report.add("corrupt_images", problem.split(" (")[0], where)
            log.debug("%s: %s", where, problem)
            return None
        if size is not None and size != (height, width):
            self.report.add("resized_images", "the json's height x width differs from the file's (the file's is "
                            "used)", f"{where}: json {height}x{width}, file {size[0]}x{size[1]}")
            height, width = size
            img["height"], img["width"] = size  # the indexed entry: evaluation's ground truth agrees
        return height, width

    def _record(self, img, semantic_dir, check_images):
        image_id = img["id"]
        file_name = os.path.join(self.image_dir, img["file_name"])
        size = self._check_file(img, file_name, check_images)
        if size is None:
            return None
        height, width = size
        semantic_file = ""
        if semantic_dir:
            semantic_file = os.path.join(semantic_dir, os.path.splitext(img["file_name"])[0] + ".png")
            if check_images != "none" and not os.path.isfile(semantic_file):
                raise FileNotFoundError(f"{self.ann_file}: image id {image_id} semantic map not found: "
                                        f"{semantic_file}")
        k = self.num_keypoints
        boxes, classes, crowd, kps, ann_ids, segs = [], [], [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            where = f"annotation id {ann['id']} in {img['file_name']}"
            box = self._box(ann, height, width, where)
            if box is None:
                continue
            keypoints = np.zeros((k, 3), np.float32)
            raw = ann.get("keypoints")
            if k and raw:
                raw = np.asarray(raw, np.float32).reshape(-1, 3) if len(raw) % 3 == 0 else np.zeros((0, 3))
                if raw.shape[0] != k:
                    self.report.add("bad_keypoints", f"not {k} (x, y, v) keypoints: ignored", where)
                else:
                    labelled = raw[:, 2] > 0
                    keypoints[labelled, :2] = raw[labelled, :2] + 0.5
                    keypoints[:, 2] = raw[:, 2]
            seg, kind, reason = coco_checks.check_segmentation(ann.get("segmentation"), height, width)
            if kind:
                self.report.add(kind, reason, where)
            boxes.append(box)
            classes.append(self.category_to_class[ann["category_id"]])  # an int (coco_checks)
            crowd.append(bool(ann.get("iscrowd", 0)))
            kps.append(keypoints)
            ann_ids.append(ann["id"])
            segs.append(seg)
        return ImageRecord(
            image_id=image_id, file_name=file_name, height=height, width=width,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            classes=np.asarray(classes, np.int32), is_crowd=np.asarray(crowd, bool),
            keypoints=np.asarray(kps, np.float32).reshape(len(kps), k, 3),
            ann_ids=np.asarray(ann_ids, np.int64), segmentations=segs, semantic_file=semantic_file)

    def _box(self, ann, height, width, where):
        """The clipped (x1, y1, x2, y2) of an annotation, or None (reported) to drop it."""
        if ann["category_id"] not in self.category_to_class:
            self.report.add("dropped_annotations", "unknown category_id", f"{where}: {ann.get('category_id')!r}")
            return None
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            self.report.add("dropped_annotations", "malformed bbox", f"{where}: {bbox!r:.60}")
            return None
        if not np.all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
            self.report.add("dropped_annotations", "degenerate bbox (width or height <= 0, or not finite)",
                            f"{where}: {bbox!r}")
            return None
        box = np.array([x, y, x + w, y + h], np.float32)
        clipped = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
        if np.any(clipped != box):
            self.report.add("clipped_boxes", "bbox reaches outside the image", f"{where}: {bbox!r}")
        if min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < self.min_box_size:
            self.report.add("dropped_annotations", f"bbox outside the image or under {self.min_box_size:g} pixel "
                            "after clipping", f"{where}: {bbox!r}")
            return None
        return clipped

    def load_masks(self, record):
        """uint8 [N, H, W] 0/1 masks of `record`'s instances, decoded with pycocotools.mask.

        Polygons, uncompressed RLE (list counts) and compressed RLE are accepted; an instance without a
        (usable) segmentation gets its box filled (counted in `stats["box_masks"]` on each call)."""
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
            raise ValueError("no polygon of 3 or more points")
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
