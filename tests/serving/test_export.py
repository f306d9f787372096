"""SavedModel export: layout, outputs in original pixels against the Keras model, a stock-op scan of
every function, a run in a process where tfdet cannot be imported, warm-up requests (bad requests:
test_bad_requests.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import CATEGORY_IDS, ROOT, run_isolated, sample_images
from tfdet.data import augment
from tfdet.evaluation import results
from tfdet.serving import ServingModule, export, next_version
from tfdet.serving import warmup

SCAN = os.path.join(ROOT, "tfdet", "serving", "graph_ops.py")
SCAN_ISOLATED = f"import runpy, sys\nsys.argv = [{SCAN!r}, sys.argv[1]]\nrunpy.run_path({SCAN!r}, run_name='__main__')\n"


def keras_reference(model, images, scale=(96, 64)):
    """The Keras model on the pipeline's own resize (tfdet.data.augment) and pad, mapped back with
    tfdet.evaluation.results: an implementation independent of tfdet.serving.module."""
    outs = []
    for image in images:
        ex = augment.resize_to_scale({"image": tf.constant(image)}, scale)
        h, w = (int(v) for v in ex["valid_size"])
        padded = tf.pad(ex["image"], [[0, 96 - h], [0, 96 - w], [0, 0]])[None]  # the pipeline's 96x96 square
        out = {k: v.numpy()[0] for k, v in model.detect(padded, tf.constant([[h, w]], tf.float32)).items()}
        info = np.array([image.shape[:2], ex["scale"].numpy(), [h, w]], np.float64)
        n = int(out["num_detections"])
        out["detection_boxes"][:n] = results.boxes_to_original(out["detection_boxes"][:n], info)
        outs.append(out)
    return outs


def test_layout_and_versions(composite_export, tmp_path):
    module, path = composite_export
    assert os.path.basename(path) == "1"
    for name in ("saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.isfile(os.path.join(path, name)), name
    assert os.listdir(os.path.dirname(path)) == ["1"]  # no temporary folder left behind
    assert next_version(os.path.dirname(path)) == 2
    with pytest.raises(FileExistsError, match="exists"):
        export(module, os.path.dirname(path), version=1)
    # A failing export leaves nothing: the bad input type fails before the rename.
    with pytest.raises(ValueError, match="input_types"):
        export(module, str(tmp_path), version=3, input_types=("jpeg",))
    assert not [n for n in os.listdir(tmp_path)]


def test_outputs_in_original_pixels_match_keras(trained, composite_export):
    model = trained[0]
    module, _ = composite_export
    images = sample_images()
    got = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images)).items()}
    ref = keras_reference(model, images)
    assert got["image_size"].tolist() == [[60, 90]] * 3
    for b, r in enumerate(ref):
        n = int(r["num_detections"])
        assert got["num_detections"][b] == n and n > 0
        expected_ids = np.where(r["detection_classes"] >= 0, np.take(CATEGORY_IDS, np.maximum(r["detection_classes"], 0)), -1)
        np.testing.assert_array_equal(got["detection_classes"][b], expected_ids)
        np.testing.assert_allclose(got["detection_boxes"][b, :n], r["detection_boxes"][:n], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(got["detection_scores"][b], r["detection_scores"], atol=1e-5)
        np.testing.assert_allclose(got["detection_masks"][b], r["detection_masks"], atol=1e-5)
        assert (got["detection_boxes"][b, n:] == 0).all()
        assert (got["detection_boxes"][b, :n, 2] <= 90).all() and (got["detection_boxes"][b, :n, 3] <= 60).all()


def test_encoded_images_of_different_sizes(composite_export):
    module, _ = composite_export
    images = sample_images()
    small = images[0, :40, :70]
    encoded = tf.constant([tf.io.encode_png(images[0]).numpy(), tf.io.encode_jpeg(small, quality=100).numpy()])
    out = {k: v.numpy() for k, v in module.encoded_image(encoded).items()}
    single = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images[:1])).items()}
    assert out["image_size"].tolist() == [[60, 90], [40, 70]]
    n = single["num_detections"][0]
    assert out["num_detections"][0] == n  # PNG is lossless: the same pixels give the same detections
    np.testing.assert_allclose(out["detection_boxes"][0, :n], single["detection_boxes"][0, :n], atol=1e-3)
    m = out["num_detections"][1]
    assert (out["detection_boxes"][1, :m, 2] <= 70).all() and (out["detection_boxes"][1, :m, 3] <= 40).all()


def test_full_image_masks(trained):
    module = ServingModule(trained[0], scale=(96, 64), mask_output="image")
    images = sample_images()[:2]
    out = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images)).items()}
    boxed = {k: v.numpy() for k, v in ServingModule(trained[0], scale=(96, 64)).image_tensor(tf.constant(images)).items()}
    masks = out["detection_masks"]
    assert masks.dtype == np.uint8 and masks.shape[2:] == (60, 90)
    for b in range(2):
        n = out["num_detections"][b]
        for d in range(n):  # the pasted mask equals the reference paste of the box-relative mask
            expected = results.paste_mask(boxed["detection_masks"][b, d], boxed["detection_boxes"][b, d], 60, 90)
            assert np.mean(masks[b, d] != expected) < 0.01
        assert (masks[b, n:] == 0).all()


def test_composite_export_uses_only_stock_ops(composite_export):
    scan = json.loads(run_isolated(SCAN_ISOLATED, composite_export[1]))
    assert "ResizeBilinear" in scan["ops"] and "DecodeImage" in scan["ops"]  # the scan sees nested functions
    assert scan["unregistered"] == [] and not [op for op in scan["ops"] if op.startswith("Tfdet")]


ISOLATED_RUN = """
import numpy as np, tensorflow as tf
try:
    import tfdet
    raise SystemExit("tfdet importable")
except ImportError:
    pass
path, images_file, out_file = sys.argv[1:4]
loaded = tf.saved_model.load(path)
data = np.load(images_file, allow_pickle=True)
tensor = loaded.signatures["image_tensor"](images=tf.constant(data["images"]))
encoded = loaded.signatures["encoded_image"](encoded_images=tf.constant(list(data["encoded"])))
default = loaded.signatures["serving_default"](images=tf.constant(data["images"]))
np.savez(out_file, **{"tensor/" + k: v.numpy() for k, v in tensor.items()},
         **{"encoded/" + k: v.numpy() for k, v in encoded.items()},
         **{"default/" + k: v.numpy() for k, v in default.items()})
"""


def test_isolated_process_matches_in_process(composite_export, tmp_path):
    """Tolerance: boxes 1e-3 px, scores and mask probabilities 1e-5; counts and category ids exact."""
    module, path = composite_export
    images = sample_images(seed=5)
    encoded = np.array([tf.io.encode_png(im).numpy() for im in images], object)
    np.savez(tmp_path / "in.npz", images=images, encoded=encoded)
    run_isolated("import sys\n" + ISOLATED_RUN, path, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    got = np.load(tmp_path / "out.npz")
    for prefix, fn, arg in (("tensor", module.image_tensor, images), ("default", module.image_tensor, images),
                            ("encoded", module.encoded_image, encoded.tolist())):
        want = {k: v.numpy() for k, v in fn(tf.constant(arg)).items()}
        assert want["num_detections"].sum() > 0
        for key, value in want.items():
            tol = 1e-3 if key == "detection_boxes" else 1e-5
            np.testing.assert_allclose(got[f"{prefix}/{key}"], value, atol=tol, err_msg=f"{prefix}/{key}")


def test_warmup_requests_parse_and_run(composite_export):
    _, path = composite_export
    records = list(tf.data.TFRecordDataset(os.path.join(path, "assets.extra", warmup.WARMUP_FILE)).as_numpy_iterator())
    parsed = [warmup.parse_prediction_log(r) for r in records]
    assert [(name, sig) for name, sig, _ in parsed] == [("tfdet", "image_tensor"), ("tfdet", "encoded_image")]
    loaded = tf.saved_model.load(path)
    for _, sig, inputs in parsed:
        out = loaded.signatures[sig](**{k: tf.constant(v) for k, v in inputs.items()})
        assert out["detection_boxes"].shape[0] == 1


def test_warmup_wire_format_matches_protobuf():
    """The hand-written bytes parse with protobuf itself, through a descriptor of the PredictionLog
    subset declared here with tensorflow_serving's field numbers (TensorProto is TensorFlow's)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="warmup_check.proto", package="check", syntax="proto3")
    fdp.dependency.append("tensorflow/core/framework/tensor.proto")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, tname, label in fields:
            m.field.add(name=fname, number=number, type=ftype, type_name=tname, label=label)
        return m

    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelSpec", [("name", 1, F.TYPE_STRING, None, opt), ("signature_name", 3, F.TYPE_STRING, None, opt)])
    message("InputsEntry", [("key", 1, F.TYPE_STRING, None, opt), ("value", 2, F.TYPE_MESSAGE, ".tensorflow.TensorProto", opt)])
    message("PredictRequest", [("model_spec", 1, F.TYPE_MESSAGE, ".check.ModelSpec", opt),
                               ("inputs", 2, F.TYPE_MESSAGE, ".check.InputsEntry", rep)])
    message("PredictLog", [("request", 1, F.TYPE_MESSAGE, ".check.PredictRequest", opt)])
    message("PredictionLog", [("predict_log", 6, F.TYPE_MESSAGE, ".check.PredictLog", opt)])
    from tensorflow.core.framework import tensor_pb2  # noqa: F401  (registers tensor.proto in the default pool)

    pool = descriptor_pool.Default()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("check.PredictionLog"))
    msg = cls.FromString(warmup.prediction_log({"images": np.ones((1, 2, 3, 3), np.uint8)}, "m", "sig"))
    request = msg.predict_log.request
    assert request.model_spec.name == "m" and request.model_spec.signature_name == "sig"
    [entry] = request.inputs
    assert entry.key == "images"
    np.testing.assert_array_equal(tf.make_ndarray(entry.value), np.ones((1, 2, 3, 3), np.uint8))


def test_keypoints_in_original_pixels_and_fixed_input_size():
    """Keypoint R-CNN (untrained weights suffice): keypoints are the model's divided by the resize scale;
    a fixed --input_size gives a static image_tensor signature."""
    from tfdet.modeling.detectors import build_detector
    from tests.serving.helpers import tiny_config

    model = build_detector(tiny_config("keypoint_rcnn").model)
    model.build(None)
    module = ServingModule(model, scale=(96, 64), input_size=(60, 90))
    assert module.image_tensor.input_signature[0].shape.as_list() == [None, 60, 90, 3]
    images = sample_images()[:1]
    out = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images)).items()}
    ex = augment.resize_to_scale({"image": tf.constant(images[0])}, (96, 64))
    h, w = (int(v) for v in ex["valid_size"])
    padded = tf.pad(ex["image"], [[0, 96 - h], [0, 96 - w], [0, 0]])[None]
    ref = {k: v.numpy()[0] for k, v in model.detect(padded, tf.constant([[h, w]], tf.float32)).items()}
    n = int(ref["num_detections"])
    assert n > 0 and out["num_detections"][0] == n
    sy, sx = ex["scale"].numpy()
    np.testing.assert_allclose(out["detection_keypoints"][0, :n, :, 0], ref["detection_keypoints"][:n, :, 0] / sx, atol=1e-3)
    np.testing.assert_allclose(out["detection_keypoints"][0, :n, :, 1], ref["detection_keypoints"][:n, :, 1] / sy, atol=1e-3)
    np.testing.assert_allclose(out["detection_keypoints"][0, :n, :, 2], ref["detection_keypoints"][:n, :, 2], atol=1e-5)
    with pytest.raises((TypeError, ValueError)):
        module.image_tensor(tf.zeros([1, 64, 90, 3], tf.uint8))  # not the fixed size
