"""ServingModule's size_rule and pad options (config.data.size_rule / serving_pad, bin/export.py) on a fake
detector that reports the padded input it was given: torchvision's sizes (the ops fixture's rows) and
its batch padding (the batch's largest resized image rounded up to 32), both input types."""

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io
from tfdet.serving.module import ServingModule, resize_ratio


class PaddedSizeReporter:
    """A detector stand-in: one detection whose score is 1000 * padded height + padded width and whose box
    is the valid (resized) size (0, 0, w, h) it was told."""

    num_classes = 1
    variables = []

    def detect(self, images, image_sizes):
        batch = tf.shape(images)[0]
        padded = tf.cast(1000 * tf.shape(images)[1] + tf.shape(images)[2], tf.float32)
        h, w = image_sizes[:, 0], image_sizes[:, 1]
        zeros = tf.zeros_like(h)
        return {"num_detections": tf.ones([batch], tf.int32), "detection_scores": tf.fill([batch, 1], padded),
                "detection_classes": tf.zeros([batch, 1], tf.int32),
                "detection_boxes": tf.stack([zeros, zeros, w, h], -1)[:, None]}


def encoded(*sizes):
    return tf.constant([tf.io.encode_png(tf.fill([h, w, 3], tf.constant(90, tf.uint8))).numpy() for h, w in sizes])


def padded_sizes(out):
    """[(padded h, padded w)] per image of the reporter's outputs."""
    scores = out["detection_scores"].numpy()[:, 0].astype(int)
    return [(int(s) // 1000, int(s) % 1000) for s in scores]


def test_torchvision_size_rule_equals_torchvision():
    meta, ops = fixtures_io.load("torchvision", "ops")
    for short, long in meta["size_rules"]:
        rows = ops[f"size_rule/{short}_{long}"]
        got = np.array([[int(v) for v in resize_ratio(h, w, (long, short), "torchvision")[:2]] for h, w in rows[:, :2]])
        np.testing.assert_array_equal(got, rows[:, 2:])
    assert [int(v) for v in resize_ratio(112, 157, (224, 160))[:2]] == [160, 224]  # the default: rounded
    assert [int(v) for v in resize_ratio(112, 157, (224, 160), "torchvision")[:2]] == [159, 223]


def test_batch_padding_both_input_types():
    """The maskrcnn fixture's images (112 x 157, 150 x 118) at 224 / 160: torchvision resizes them to
    159 x 223 and 203 x 160 and pads the batch to 224 x 224; alone, each pads to its own multiple of 32."""
    module = ServingModule(PaddedSizeReporter(), scale=(224, 160), size_rule="torchvision", pad="batch")
    out = module.encoded_image(encoded((112, 157), (150, 118)))
    assert padded_sizes(out) == [(224, 224)] * 2
    np.testing.assert_array_equal(out["image_status"], [0, 0])
    # the valid sizes the detector was given, mapped back by the exact ratios: the original sizes
    np.testing.assert_allclose(out["detection_boxes"].numpy()[:, 0, 2:], [[157, 112], [118, 150]], rtol=1e-6)
    assert padded_sizes(module.encoded_image(encoded((112, 157)))) == [(160, 224)]
    assert padded_sizes(module.image_tensor(tf.zeros([2, 150, 118, 3], tf.uint8))) == [(224, 160)] * 2
    # a failed image is left out of the padding; an empty batch still runs (one blank 32 x 32 image)
    out = module.encoded_image(tf.constant([b"not an image", encoded((112, 157)).numpy()[0]]))
    assert padded_sizes(out)[1] == (160, 224) and out["image_status"].numpy().tolist() == [1, 0]
    assert module.encoded_image(tf.zeros([0], tf.string))["num_detections"].shape == (0,)
    # the default: the square of max(scale) rounded up to 32, whatever the batch
    square = ServingModule(PaddedSizeReporter(), scale=(224, 160))
    assert padded_sizes(square.encoded_image(encoded((112, 157), (150, 118)))) == [(224, 224)] * 2
    assert padded_sizes(square.image_tensor(tf.zeros([1, 112, 157, 3], tf.uint8))) == [(224, 224)]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="size_rule must be one of"):
        ServingModule(PaddedSizeReporter(), scale=(224, 160), size_rule="floor")
    with pytest.raises(ValueError, match="pad must be one of"):
        ServingModule(PaddedSizeReporter(), scale=(224, 160), pad="multiple")
