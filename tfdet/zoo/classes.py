"""Class spaces of converted models: COCO's categories, and keeping a chosen subset of a model's classes in
its class-specific layers (bin/convert.py --classes). Pure functions on {tfdet weight path: array}.

A converter lists its class layers as (weight path prefix, kind); the kind says how the layer's output
channels (the last axis of its kernel and bias, TF layout) index the model's C classes:
  "classes"             C channels, channel c = class c (mask logits, sigmoid classifiers)
  "classes+background"  C + 1 channels, class c at c and the background last (softmax classifiers)
  "boxes"               4 C channels, class c at 4c .. 4c + 3 (class-specific box regression)
  "anchor_major"        A C channels for A anchors, class c of anchor a at a C + c (RetinaNet's classifier)

    keep = class_indices(["person", "3"], category_ids, class_names)   # names or category ids
    weights = select_classes(weights, [("bbox_head/cls/", "classes+background"), ...], keep, num_classes)
"""

import numpy as np

KINDS = ("classes", "classes+background", "boxes", "anchor_major")
# The kind of tfdet's class layers, by layer name: softmax box classifiers (background last), class-specific
# box regressors, mask logits, RetinaNet-style classifiers (one anchor: a GA-RetinaNet location).
LAYER_KINDS = {"cls": "classes+background", "reg": "boxes", "logits": "classes", "retina_cls": "anchor_major"}

# COCO 2017 instance categories {id: name}; ids 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83 are unused.
COCO_CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush"}


def coco_name(category_id, unused="N/A"):
    """The COCO name of a category id; `unused` for ids COCO does not use (0 is "__background__")."""
    return "__background__" if category_id == 0 else COCO_CATEGORIES.get(int(category_id), unused)


def class_indices(selection, category_ids, class_names=None):
    """The model class indices of `selection` (in its order): each entry a category id (an int, or a string
    of digits) or a class name. ValueError naming every entry that is unknown, ambiguous or repeated."""
    if not selection:
        raise ValueError("no classes selected: give category ids or class names, e.g. --classes=1,3 or "
                         "--classes=person,car.")
    ids = [int(c) for c in category_ids]
    names = list(class_names) if class_names is not None else []
    out, problems = [], []
    for entry in selection:
        text = str(entry).strip()
        by_id = text.isdigit()
        matches = [c for c, v in enumerate(ids if by_id else names) if v == (int(text) if by_id else text)]
        if len(matches) != 1:
            problems.append(f"{text!r} ({'no' if not matches else f'{len(matches)}'} "
                            f"{'category id' if by_id else 'class name'}{'s' if matches else ''})")
        elif matches[0] in out:
            problems.append(f"{text!r} (given twice)")
        else:
            out.append(matches[0])
    if problems:
        known = ", ".join(f"{i}" + (f" {names[c]!r}" if names else "") for c, i in enumerate(ids))
        raise ValueError(f"cannot select classes {', '.join(problems)}; the source's classes (category id, name): "
                         f"{known}.")
    return out


def layer_kinds(prefixes):
    """(prefix, kind) of tfdet class-layer path prefixes ("bbox_head2/cls/", "mask_head/logits/", ...), the
    kind by the layer's name (LAYER_KINDS)."""
    out = []
    for prefix in prefixes:
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        if name not in LAYER_KINDS:
            raise ValueError(f"{prefix!r} is not a class layer tfdet knows ({', '.join(LAYER_KINDS)}).")
        out.append((prefix, LAYER_KINDS[name]))
    return tuple(out)


def channels(kind, keep, num_classes, width):
    """Indices of the output channels of a class layer of `kind` and `width` channels that hold the
    classes `keep` of `num_classes` (background included for "classes+background")."""
    keep = [int(k) for k in keep]
    if kind == "classes":
        want, index = num_classes, keep
    elif kind == "classes+background":
        want, index = num_classes + 1, keep + [num_classes]
    elif kind == "boxes":
        want, index = 4 * num_classes, [4 * k + j for k in keep for j in range(4)]
    elif kind == "anchor_major":
        anchors = width // num_classes
        want, index = anchors * num_classes, [a * num_classes + k for a in range(anchors) for k in keep]
    else:
        raise ValueError(f"unknown class layer kind {kind!r}; known: {', '.join(KINDS)}.")
    if width != want or not width:
        raise ValueError(f"a {kind!r} class layer of {num_classes} classes has {want} output channels, this one "
                         f"{width}.")
    return index


def select_classes(weights, class_layers, keep, num_classes):
    """{path: array}: `weights` with the output channels of every class layer cut down to the classes
    `keep` (indices into the model's `num_classes` classes, in the order given; background kept last);
    every other weight unchanged. class_layers: (path prefix, kind) pairs; each must match some weight."""
    if not keep or len(set(keep)) != len(keep) or not all(0 <= int(k) < num_classes for k in keep):
        raise ValueError(f"keep must be distinct class indices in [0, {num_classes}), got {list(keep)}.")
    out = dict(weights)
    for prefix, kind in class_layers:
        paths = [p for p in weights if p.startswith(prefix)]
        if not paths:
            raise ValueError(f"no weight under the class layer {prefix!r}.")
        for path in paths:
            value = np.asarray(weights[path])
            index = channels(kind, keep, num_classes, value.shape[-1])
            out[path] = np.ascontiguousarray(np.take(value, index, axis=-1))
    return out
