"""A model's own class -> category ids (config.data.category_ids, e.g. a converted torchvision model's COCO
ids): evaluation maps class c to category_ids[c], not to the c-th annotated category, and leaves out the
detections of ids the annotations lack; without them, today's mapping (the annotations' ids in order)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfdet.evaluation import runner

CATEGORIES = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}, {"id": 12, "name": "twelve"}]  # non-contiguous
BOXES = {1: ([8, 10, 30, 24], 12), 2: ([20, 16, 24, 30], 3), 3: ([5, 5, 40, 40], 7)}  # image id: (x, y, w, h), id
MODEL_IDS = (12, 7, 3, 5)  # the model's classes: class 3 (id 5) is not annotated
MODEL_CLASS = {12: 0, 7: 1, 3: 2}


def write_coco(folder):
    images, annotations = [], []
    for image_id, (box, category) in BOXES.items():
        name = f"{image_id}.png"
        tf.io.write_file(str(folder / name), tf.io.encode_png(tf.fill([48, 64, 3], tf.constant(60, tf.uint8))))
        images.append({"id": image_id, "file_name": name, "height": 48, "width": 64})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": category, "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0})
    path = folder / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return str(path)


def gt_predict(inputs, extra=True):
    """Each image's ground-truth box as the model class of its category (MODEL_CLASS), plus (`extra`) a
    detection of class 3 (category id 5, not annotated); boxes in network-input pixels."""
    info = np.asarray(inputs["image_info"])
    boxes, classes = [], []
    for b, image_id in enumerate(np.asarray(inputs["image_id"])):
        (x, y, w, h), category = BOXES[int(image_id)]
        sy, sx = info[b, 1]
        boxes.append([[x * sx, y * sy, (x + w) * sx, (y + h) * sy], [0, 0, 10, 10]])
        classes.append([MODEL_CLASS[category], 3])
    batch = len(boxes)
    return {"num_detections": np.full([batch], 2 if extra else 1, np.int32),
            "detection_boxes": np.array(boxes, np.float32),
            "detection_scores": np.tile(np.array([[0.9, 0.5]], np.float32), [batch, 1]),
            "detection_classes": np.array(classes, np.int32)}


def settings(tmp_path, ann, category_ids):
    return runner.EvalSettings(annotations=ann, output=str(tmp_path / "res.json"), scale=(96, 64),
                               eval_types=("bbox",), category_ids=category_ids)


def test_category_ids_map_model_classes(tmp_path):
    ann = write_coco(tmp_path)
    report = runner.run(settings(tmp_path, ann, MODEL_IDS), gt_predict, print_fn=lambda *_: None)
    results = json.loads((tmp_path / "res.json").read_text())
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [(1, 12), (2, 3), (3, 7)]  # no id 5
    assert report["bbox"]["metrics"]["AP"] == pytest.approx(1.0)


def test_without_category_ids_class_c_is_the_cth_annotated_category(tmp_path):
    ann = write_coco(tmp_path)
    runner.run(settings(tmp_path, ann, None), lambda inputs: gt_predict(inputs, extra=False), print_fn=lambda *_: None)
    results = json.loads((tmp_path / "res.json").read_text())
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [(1, 3), (2, 12), (3, 7)]  # 0 -> 3, 2 -> 12
