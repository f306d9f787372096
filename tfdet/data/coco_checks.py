"""Checks of a COCO dataset dict before pycocotools indexes it, and of each segmentation.

pycocotools trusts its input: an annotation without "id" is a KeyError, two images with one id become one
(the other's annotations attach to it), and an orphan annotation is silently never seen. `clean_dataset`
returns a copy that is safe to index, reporting to a `DataReport` every record it drops or repairs:

  invalid_images           image entries without an integer id, a file name or a positive height and
                           width (dropped), or repeating an id (the first entry is kept)
  dropped_annotations      orphans (an image_id that no image has), annotations without an integer
                           category_id
  renumbered_annotations   annotations without an integer id or repeating one get a fresh id

Categories define the classes, so a category problem is an error, not a repair.
`check_segmentation` vets one instance's segmentation against its image size (see its docstring).
"""

import math


def is_int(value):
    """An integer (not a bool), or a float with an integer value (json writers emit 3.0)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def check_categories(categories, ann_file):
    """The categories sorted by id; ValueError naming the first one without an integer id, or a repeated id."""
    seen = set()
    for c in categories:
        if not isinstance(c, dict) or not is_int(c.get("id")):
            raise ValueError(f"{ann_file}: category {c!r:.120} has no integer 'id'; every COCO category needs one.")
        if int(c["id"]) in seen:
            raise ValueError(f"{ann_file}: category id {c['id']} appears twice; each category needs its own id.")
        seen.add(int(c["id"]))
    return sorted((dict(c, id=int(c["id"])) for c in categories), key=lambda c: c["id"])


def describe_image(img):
    """How a summary names an image entry: its id and file name."""
    if not isinstance(img, dict):
        return repr(img)[:60]
    return f"image id {img.get('id')!r} ({img.get('file_name', '?')})"


def _image_entry_problem(img):
    if not isinstance(img, dict):
        return "not a json object"
    if not is_int(img.get("id")):
        return "no integer 'id'"
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        return "no 'file_name'"
    if not all(is_int(img.get(k)) and img[k] > 0 for k in ("height", "width")):
        return "no valid 'height' / 'width'"
    return None


def clean_dataset(data, report):
    """A copy of a COCO dataset dict whose images have unique integer ids, sizes and file names and whose
    annotations have unique integer ids and belong to an image (see the module docstring)."""
    images, image_ids = [], set()
    for img in data["images"]:
        problem = _image_entry_problem(img)
        if problem is None and int(img["id"]) in image_ids:
            problem = "repeated image id (the first entry is kept)"
        if problem:
            report.add("invalid_images", problem, describe_image(img))
            continue
        image_ids.add(int(img["id"]))
        images.append(dict(img, id=int(img["id"]), height=int(img["height"]), width=int(img["width"])))
    valid_ids = [a["id"] for a in data["annotations"] if isinstance(a, dict) and is_int(a.get("id"))]
    next_id = int(max(valid_ids, default=0)) + 1
    annotations, ann_ids = [], set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            report.add("dropped_annotations", "not a json object", repr(ann)[:60])
            continue
        image_id = ann.get("image_id")
        if not is_int(image_id) or int(image_id) not in image_ids:
            report.add("dropped_annotations", "orphan: no image has its image_id",
                       f"annotation id {ann.get('id')!r} with image_id {image_id!r}")
            continue
        if not is_int(ann.get("category_id")):
            report.add("dropped_annotations", "no integer category_id",
                       f"annotation id {ann.get('id')!r} with category_id {ann.get('category_id')!r:.40}")
            continue
        ann = dict(ann, image_id=int(image_id), category_id=int(ann["category_id"]))
        ann_id = ann.get("id")
        if not is_int(ann_id) or int(ann_id) in ann_ids:
            ann["id"], next_id = next_id, next_id + 1
            report.add("renumbered_annotations", "repeated id" if is_int(ann_id) else "no integer 'id'",
                       f"annotation id {ann_id!r} of image id {ann['image_id']} is now {ann['id']}")
        ann["id"] = int(ann["id"])
        ann_ids.add(ann["id"])
        annotations.append(ann)
    return dict(data, images=images, annotations=annotations)


def _polygon_problem(part):
    if not isinstance(part, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                                             math.isfinite(v) for v in part):
        return "malformed polygon (not a list of finite numbers)"
    if len(part) % 2:
        return "malformed polygon (an odd number of coordinates)"
    if len(part) < 6:
        return "polygon of fewer than 3 points"
    return None


def check_segmentation(seg, height, width):
    """(segmentation to use, kind, reason) of one instance's raw COCO segmentation on a height x width image.

    kind is None when the segmentation is usable as it is; "trimmed_segmentations" when some of its
    polygons had fewer than 3 points (or were malformed) and were removed, the rest is returned; and
    "segmentations_replaced_by_box" when nothing usable is left (a polygon list without a polygon of 3
    points, a malformed one, an RLE of another size): None is returned and the instance's box becomes its
    mask, as for an instance without segmentation. Compressed RLE strings are not decoded here."""
    if seg is None or (isinstance(seg, list) and not seg):
        return None, None, None
    if isinstance(seg, list):
        problems = [_polygon_problem(part) for part in seg]
        kept = [part for part, problem in zip(seg, problems) if problem is None]
        if not kept:
            return None, "segmentations_replaced_by_box", problems[0]
        if len(kept) < len(seg):
            dropped = next(p for p in problems if p)
            return kept, "trimmed_segmentations", f"{dropped} removed from a multi-part polygon"
        return seg, None, None
    if not isinstance(seg, dict) or not isinstance(seg.get("counts"), (str, bytes, list)):
        return None, "segmentations_replaced_by_box", "unsupported segmentation (no polygon list or RLE)"
    size = seg.get("size")
    if not isinstance(size, (list, tuple)) or [int(v) if is_int(v) else v for v in size] != [height, width]:
        return None, "segmentations_replaced_by_box", "RLE size differs from the image's"
    if isinstance(seg["counts"], list) and (not all(is_int(c) and c >= 0 for c in seg["counts"])
                                            or sum(seg["counts"]) != height * width):
        return None, "segmentations_replaced_by_box", "malformed uncompressed RLE (counts do not cover the image)"
    return seg, None, None
