"""bin/evaluate.py --saved_model on a SavedModel as tfdet.serving.export writes it (bin/export.py): images go
in as a client sends them, the export's category ids, original-pixel boxes and masks come out as they are,
and COCO AP is computed on them."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import CATEGORY_IDS, run_bin, sample_images
from tfdet.evaluation import loaders, results as results_lib, runner


@pytest.fixture(scope="module")
def coco_set(composite_export, tmp_path_factory):
    """(annotations path, [(image id, PNG bytes)]) of three images of two sizes; each image's ground truth
    is the export's own top detection there (so AP is high only when the results keep the export's
    category ids and original-pixel boxes)."""
    _, path = composite_export
    folder = tmp_path_factory.mktemp("evalset")
    images = sample_images(seed=4)
    images = [images[0], images[1, :44, :72], images[2]]
    ids = [5, 9, 12]
    encoded = [tf.io.encode_png(im).numpy() for im in images]
    fn = tf.saved_model.load(path).signatures["encoded_image"]
    annotations = []
    for image_id, data in zip(ids, encoded):
        out = {k: v.numpy() for k, v in fn(encoded_images=tf.constant([data])).items()}
        assert out["num_detections"][0] > 0
        x1, y1, x2, y2 = (float(v) for v in out["detection_boxes"][0, 0])
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                            "category_id": int(out["detection_classes"][0, 0]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1),
                            "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    for image_id, data in zip(ids, encoded):
        (folder / f"im{image_id}.png").write_bytes(data)
    ann = folder / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"im{i}.png", "height": im.shape[0], "width": im.shape[1]}
                   for i, im in zip(ids, images)],
        "annotations": annotations, "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]}))
    return str(ann), list(zip(ids, encoded))


def direct_results(fn, requests):
    """COCO results of the signature `fn` called directly, one request per [(image id, input)] group."""
    out = []
    for group in requests:
        ids = [i for i, _ in group]
        if fn.structured_input_signature[1].keys() == {"encoded_images"}:
            outputs = fn(encoded_images=tf.constant([d for _, d in group]))
        else:
            outputs = fn(images=tf.constant(np.stack([d for _, d in group])))
        out += results_lib.serving_to_coco({k: v.numpy() for k, v in outputs.items()}, ids)
    return out


def assert_same_results(got, expected):
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert (g["image_id"], g["category_id"]) == (e["image_id"], e["category_id"])
        np.testing.assert_allclose(g["bbox"], e["bbox"], rtol=1e-5, atol=1e-3)
        assert g["score"] == pytest.approx(e["score"], abs=1e-5)
    assert {r["category_id"] for r in got} <= set(CATEGORY_IDS)


@pytest.mark.slow
def test_cli_evaluates_the_encoded_image_signature(composite_export, coco_set, tmp_path):
    _, path = composite_export
    ann, images = coco_set
    out = tmp_path / "results.json"
    proc = run_bin("evaluate.py", f"--saved_model={path}", f"--annotations={ann}", f"--output={out}",
                   "--batch_size=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    fn = tf.saved_model.load(path).signatures["encoded_image"]
    assert_same_results(got, direct_results(fn, [images[:2], images[2:]]))
    assert all("segmentation" in r for r in got)
    metrics = json.loads((tmp_path / "results.metrics.json").read_text())
    # Each image's ground truth is one of its detections: AP is far from 0 only without a second class
    # mapping or box rescaling.
    assert metrics["bbox"]["metrics"]["AP"] > 0.3
    assert metrics["segm"]["metrics"]["AP"] >= 0.0


def test_image_tensor_signature_and_preference(composite_export, coco_set, tmp_path):
    _, path = composite_export
    ann, images = coco_set
    # serving_default of this export is image_tensor; the encoded_image signature is preferred.
    predictor = loaders.saved_model_predict_fn(path)
    assert (predictor.kind, predictor.signature) == ("encoded_image", "encoded_image")
    tensor = loaders.saved_model_predict_fn(path, signature="serving_default")
    assert tensor.kind == "image_tensor"
    s = runner.EvalSettings(annotations=ann, output=str(tmp_path / "r.json"))
    report = runner.run(s, tensor, print_fn=lambda _: None)
    got = json.loads((tmp_path / "r.json").read_text())
    decoded = [[(i, tf.io.decode_png(d, channels=3).numpy())] for i, d in images]
    assert_same_results(got, direct_results(tensor.fn, decoded))
    assert report["bbox"]["metrics"]["AP"] > 0.3


def test_unusable_signatures_are_clear_errors(composite_export, coco_set, tmp_path):
    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    other = Other()
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.serve})
    with pytest.raises(ValueError, match="no signature evaluation can call.*serving_default \\(x: float32"):
        loaders.saved_model_predict_fn(str(tmp_path / "other"))
    ann, _ = coco_set
    s = runner.EvalSettings(annotations=ann, tta_flip=True)
    with pytest.raises(ValueError, match="test-time augmentation"):
        runner.run(s, loaders.saved_model_predict_fn(composite_export[1]), print_fn=lambda _: None)


def test_tfrecords_images_give_the_files_results(composite_export, coco_set, tmp_path):
    from tfdet.data import coco, tfrecords

    _, path = composite_export
    ann, images = coco_set
    prefix = str(tmp_path / "val")
    tfrecords.write_tfrecords(coco.CocoReader(ann, os.path.dirname(ann)), prefix, num_shards=2)
    predictor = loaders.saved_model_predict_fn(path)
    runner.run(runner.EvalSettings(annotations=ann, tfrecords=prefix, output=str(tmp_path / "t.json")), predictor,
               print_fn=lambda _: None)
    got = json.loads((tmp_path / "t.json").read_text())
    assert_same_results(got, direct_results(predictor.fn, [[item] for item in images]))
    # Annotations of fewer images than the records hold: only theirs are run.
    data = json.loads(open(ann).read())
    data["images"] = data["images"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {im["id"] for im in data["images"]}]
    (tmp_path / "two.json").write_text(json.dumps(data))
    runner.run(runner.EvalSettings(annotations=str(tmp_path / "two.json"), tfrecords=prefix,
                                   output=str(tmp_path / "t2.json")), predictor, print_fn=lambda _: None)
    got = json.loads((tmp_path / "t2.json").read_text())
    assert_same_results(got, direct_results(predictor.fn, [[item] for item in images[:2]]))
