"""Helpers for the data tests: tiny COCO folders written from Python."""

import json
import os

import numpy as np
import tensorflow as tf

TINY_SHAPES = dict(num_train=6, num_val=3, min_image_size=96, max_image_size=128, max_shapes=3,
                   min_shape_size=16, max_shape_size=40)


def write_png(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(pixels))
    return pixels


def write_coco(folder, images, annotations, categories, image_files=True):
    """Writes folder/ann.json and (unless told not to) a random PNG per image; returns the json path."""
    os.makedirs(folder, exist_ok=True)
    if image_files:
        for img in images:
            write_png(os.path.join(folder, img["file_name"]), img["height"], img["width"], img["id"])
    path = os.path.join(folder, "ann.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
