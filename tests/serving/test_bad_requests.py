"""Bad requests to the serving signatures: one encoded image that does not decode gets a status and the
rest of its batch is detected; an empty batch gets empty outputs; a tensor that is not RGB fails at once
with a message saying so."""

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import sample_images
from tfdet.evaluation import results
from tfdet.serving import ServingModule


def _numpy(outputs):
    return {k: v.numpy() for k, v in outputs.items()}


def _corrupt_jpeg(image):
    """A JPEG whose headers are intact and whose coded data is garbage (decoding fails past the header)."""
    data = tf.io.encode_jpeg(image).numpy()
    sos = data.index(b"\xff\xda")
    return data[:sos + 14] + np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()


def _assert_empty_row(out, b):
    assert out["image_status"][b] == 1 and out["num_detections"][b] == 0
    assert (out["detection_classes"][b] == -1).all() and not out["detection_boxes"][b].any()
    assert not out["detection_scores"][b].any() and not out["detection_masks"][b].any()
    assert out["image_size"][b].tolist() == [0, 0]


def test_one_bad_encoded_image_does_not_fail_the_batch(composite_export):
    module, path = composite_export
    loaded = tf.saved_model.load(path)
    images = sample_images(seed=6)
    good = [tf.io.encode_png(im).numpy() for im in images[:2]]
    batch = [good[0], b"definitely not an image", _corrupt_jpeg(images[2]), good[1]]
    out = _numpy(loaded.signatures["encoded_image"](encoded_images=tf.constant(batch)))
    np.testing.assert_array_equal(out["image_status"], [0, 1, 1, 0])
    alone = _numpy(module.encoded_image(tf.constant(good)))
    np.testing.assert_array_equal(alone["image_status"], [0, 0])
    assert alone["num_detections"].min() > 0
    for key, value in alone.items():  # the good images' rows are those of a batch without the bad ones
        tol = 1e-3 if key == "detection_boxes" else 1e-5
        np.testing.assert_allclose(out[key][[0, 3]], value, atol=tol, err_msg=key)
    for b in (1, 2):
        _assert_empty_row(out, b)
    # The COCO results of the batch hold the good images only.
    dets = results.serving_to_coco(out, [10, 11, 12, 13])
    assert {d["image_id"] for d in dets} == {10, 13}
    assert len(dets) == len(results.serving_to_coco(alone, [10, 13]))


def test_a_batch_of_bad_images_and_empty_batches(composite_export):
    _, path = composite_export
    loaded = tf.saved_model.load(path)
    one = _numpy(loaded.signatures["image_tensor"](images=tf.constant(sample_images()[:1])))
    bad = _numpy(loaded.signatures["encoded_image"](encoded_images=tf.constant([b"junk", b""])))
    for b in (0, 1):
        _assert_empty_row(bad, b)
    for signature, arg in (("encoded_image", {"encoded_images": tf.zeros([0], tf.string)}),
                           ("image_tensor", {"images": tf.zeros([0, 60, 90, 3], tf.uint8)})):
        out = _numpy(loaded.signatures[signature](**arg))
        assert out.keys() == one.keys(), signature
        for key, value in out.items():  # zero rows, the shapes of a one-image request after that
            assert value.shape == (0,) + one[key].shape[1:] and value.dtype == one[key].dtype, (signature, key)
    for key, value in bad.items():
        assert value.shape == (2,) + one[key].shape[1:] and value.dtype == one[key].dtype, key


def test_full_image_masks_with_a_bad_image_and_an_empty_batch(trained):
    module = ServingModule(trained[0], scale=(96, 64), mask_output="image")
    good = tf.io.encode_png(sample_images()[0]).numpy()
    out = _numpy(module.encoded_image(tf.constant([b"junk", good])))
    assert out["image_status"].tolist() == [1, 0] and out["detection_masks"].shape[2:] == (60, 90)
    assert out["num_detections"][1] > 0 and not out["detection_masks"][0].any()
    empty = _numpy(module.encoded_image(tf.zeros([0], tf.string)))
    assert all(v.shape[0] == 0 for v in empty.values())


def test_bad_tensors_fail_at_once_with_a_clear_message(composite_export):
    _, path = composite_export
    loaded = tf.saved_model.load(path)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="(?i)uint8"):
        loaded.signatures["image_tensor"](images=tf.zeros([1, 60, 90, 3], tf.float32))
    for channels in (4, 1):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"image_tensor: images must be uint8 \[batch, height, width, 3\] RGB; got shape\] "
                                 rf"\[1 60 90 {channels}\]"):
            loaded.signatures["image_tensor"](images=tf.zeros([1, 60, 90, channels], tf.uint8))
