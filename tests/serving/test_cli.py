"""bin/export.py -> bin/predict.py round trip on a tiny Mask R-CNN trained a few steps, the REST client
against a local stand-in of TF Serving's REST API, the gRPC client's clear error without its package."""

import base64
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import run_bin, sample_images
from tfdet.evaluation import results as results_lib
from tfdet.serving import client


def write_images(folder):
    images = sample_images(seed=2)
    paths = []
    for i, image in enumerate(images[:2]):
        path = os.path.join(folder, f"img{i}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        paths.append(path)
    return images, paths


@pytest.mark.slow
def test_export_then_predict_round_trip(trained, tmp_path):
    model, checkpoint, losses = trained
    assert all(np.isfinite(losses))
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps({"images": [{"id": 41, "file_name": "img0.png", "height": 60, "width": 90}],
                                       "annotations": [], "categories": [{"id": 3, "name": "cat"},
                                       {"id": 7, "name": "dog"}, {"id": 11, "name": "cow"}]}))
    export_dir = tmp_path / "export"
    proc = run_bin("export.py", "--config=configs/mask_rcnn.py:tiny", f"--checkpoint={checkpoint}",
                   f"--export_dir={export_dir}", f"--annotations={annotations}", "--scale=96x64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(export_dir / "1" / "saved_model.pb")
    images, paths = write_images(str(tmp_path))
    out = tmp_path / "out" / "results.json"
    proc = run_bin("predict.py", f"--saved_model={export_dir}", f"--images={tmp_path}/img*.png", f"--output={out}",
                   f"--render_dir={tmp_path / 'png'}", f"--annotations={annotations}", "--render_threshold=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    # The same detections as the trained in-process model through the serving module (its checkpoint).
    from tfdet.serving import ServingModule
    module = ServingModule(model, scale=(96, 64), category_ids=[3, 7, 11])
    outputs = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images[:2])).items()}
    expected = results_lib.serving_to_coco(outputs, [41, 1])
    assert len(results) == len(expected) > 0
    for got, want in zip(results, expected):
        assert got["image_id"] == want["image_id"] and got["category_id"] == want["category_id"]
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-3)
        assert abs(got["score"] - want["score"]) < 1e-5 and "segmentation" in got
    for name in ("img0.png", "img1.png"):
        png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "png" / name))).numpy()
        enlarged = np.repeat(np.repeat(images[int(name[3])], 6, axis=0), 6, axis=1)  # legible labels: 6 x 90 >= 480
        assert png.shape == (360, 540, 3) and (png != enlarged).any()  # something was drawn


NAMED_CONFIG = """
from configs import mask_rcnn


def get_config(arg=None):
    config = mask_rcnn.get_config("tiny")
    config.data.category_ids = [3, 7, 11]
    config.data.class_names = ["cat", "dog", "cow"]
    return config
"""


@pytest.mark.slow
def test_config_category_ids_and_names(trained, tmp_path):
    """A config's data.category_ids are the export's default detection_classes, and predict --config labels
    the renders with its data.class_names, as --annotations' names do (ids when there are none)."""
    model, checkpoint, _ = trained
    config = tmp_path / "named.py"
    config.write_text(NAMED_CONFIG)
    export_dir = tmp_path / "export"
    proc = run_bin("export.py", f"--config={config}", f"--checkpoint={checkpoint}", f"--export_dir={export_dir}",
                   "--scale=96x64", "--input_type=encoded_image", "--nowarmup")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images, _ = write_images(str(tmp_path))
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 11, "name": "cow"}]}))
    renders = {}
    for how, names in (("config", [f"--config={config}"]), ("annotations", [f"--annotations={annotations}"]),
                       ("ids", [])):
        out = tmp_path / how / "results.json"
        proc = run_bin("predict.py", f"--saved_model={export_dir}", f"--images={tmp_path}/img*.png", f"--output={out}",
                       f"--render_dir={tmp_path / how}", "--render_threshold=0", *names)
        assert proc.returncode == 0, proc.stderr[-3000:]
        renders[how] = tf.io.decode_png(tf.io.read_file(str(tmp_path / how / "img0.png"))).numpy()
    from tfdet.serving import ServingModule
    module = ServingModule(model, scale=(96, 64), category_ids=[3, 7, 11])
    outputs = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images[:2])).items()}
    expected = results_lib.serving_to_coco(outputs, [0, 1])
    results = json.loads((tmp_path / "config" / "results.json").read_text())
    assert [r["category_id"] for r in results] == [r["category_id"] for r in expected] and results
    np.testing.assert_array_equal(renders["config"], renders["annotations"])
    assert (renders["config"] != renders["ids"]).any()


class _FakeServing(BaseHTTPRequestHandler):
    """Answers POST /v1/models/<name>:predict like TF Serving's REST API, from a loaded SavedModel."""

    loaded = None
    name = "tiny"

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != f"/v1/models/{self.name}:predict":
            return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
        fn = self.loaded.signatures[body.get("signature_name", "serving_default")]
        args = {}
        for key, value in body["inputs"].items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = [base64.b64decode(v["b64"]) for v in value]
            args[key] = tf.constant(value, fn.structured_input_signature[1][key].dtype)
        try:
            outputs = fn(**args)
        except tf.errors.InvalidArgumentError as e:
            return self._reply(400, {"error": e.message})
        self._reply(200, {"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}})

    def _reply(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_rest_client_matches_local(composite_export):
    _, path = composite_export
    _FakeServing.loaded = tf.saved_model.load(path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        images = sample_images(seed=4)
        inputs = {"encoded_images": np.array([tf.io.encode_png(im).numpy() for im in images], object)}
        remote = client.RestPredictor(url, "tiny", signature="encoded_image")(inputs)
        local = client.LocalPredictor(path, signature="encoded_image")(inputs)
        assert set(remote) == set(local)
        for key in local:
            np.testing.assert_allclose(remote[key], local[key], atol=1e-6, err_msg=key)
        junk = client.RestPredictor(url, "tiny", signature="encoded_image")(
            {"encoded_images": np.array([b"junk"], object)})  # not an error: a status for that image
        assert junk["image_status"].tolist() == [1] and junk["num_detections"].tolist() == [0]
        with pytest.raises(ValueError, match="(?is)HTTP 400.*image"):
            client.RestPredictor(url, "tiny", signature="image_tensor")({"images": np.zeros((1, 8, 8, 4), np.uint8)})
        with pytest.raises(ValueError, match="HTTP 404"):
            client.RestPredictor(url, "other")(inputs)
    finally:
        server.shutdown()
        server.server_close()


def _bad_files(folder):
    """A text file and a JPEG whose coded data is garbage behind intact headers."""
    text = os.path.join(folder, "notes.txt")
    with open(text, "w") as f:
        f.write("not an image")
    data = tf.io.encode_jpeg(sample_images(seed=3)[0]).numpy()
    broken = os.path.join(folder, "broken.jpg")
    with open(broken, "wb") as f:
        f.write(data[:data.index(b"\xff\xda") + 14] + bytes(range(256)))
    return text, broken


def _check_skipping_run(proc, out, expected, bad):
    assert proc.returncode == 1, proc.stderr[-3000:]
    for path in bad:
        assert f"predict.py: skipped {path}: " in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"predict.py: 2 of 4 images were skipped (named above); the "
                                                    f"results of the other 2 are in {out}.")
    assert "Traceback" not in proc.stderr
    got = json.loads(out.read_text())
    assert len(got) == len(expected) > 0
    for g, w in zip(got, expected):
        assert g["image_id"] == w["image_id"] and g["category_id"] == w["category_id"]
        np.testing.assert_allclose(g["bbox"], w["bbox"], atol=1e-3)


@pytest.mark.parametrize("input_type", ["encoded_image", pytest.param("image_tensor", marks=pytest.mark.slow)])
def test_predict_skips_a_bad_image_by_name_and_writes_the_rest(composite_export, tmp_path, input_type):
    module, path = composite_export
    images, (good0, good1) = write_images(str(tmp_path))
    bad = _bad_files(str(tmp_path))
    files = [good0, bad[0], bad[1], good1]  # image ids are the indices 0..3
    outputs = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images[:2])).items()}
    out = tmp_path / "out.json"
    proc = run_bin("predict.py", f"--saved_model={os.path.dirname(path)}", f"--images={','.join(files)}",
                   f"--output={out}", f"--input_type={input_type}")
    _check_skipping_run(proc, out, results_lib.serving_to_coco(outputs, [0, 3]), bad)
    assert "not a decodable image" in proc.stderr


class _OldServing(_FakeServing):
    """A server whose model fails a whole encoded batch for one bad image (an export without image_status)."""

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        body = json.loads(raw)
        for value in body["inputs"].get("encoded_images", []):
            try:
                tf.io.decode_image(base64.b64decode(value["b64"]), channels=3, expand_animations=False)
            except tf.errors.InvalidArgumentError as e:
                return self._reply(400, {"error": e.message})
        self.rfile = io.BytesIO(raw)
        return super().do_POST()


def test_predict_sends_images_alone_when_a_batch_fails_as_a_whole(composite_export, tmp_path):
    module, path = composite_export
    _OldServing.loaded = tf.saved_model.load(path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldServing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        images, (good0, good1) = write_images(str(tmp_path))
        bad = _bad_files(str(tmp_path))
        outputs = {k: v.numpy() for k, v in module.image_tensor(tf.constant(images[:2])).items()}
        out = tmp_path / "out.json"
        proc = run_bin("predict.py", f"--server=http://127.0.0.1:{server.server_address[1]}", "--model_name=tiny",
                       f"--images={','.join([good0, bad[0], bad[1], good1])}", f"--output={out}")
        _check_skipping_run(proc, out, results_lib.serving_to_coco(outputs, [0, 3]), bad)
        assert "rejected (" in proc.stderr and "HTTP 400" in proc.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_grpc_client_explains_missing_package():
    try:
        import tensorflow_serving  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow-serving-api"):
            client.GrpcPredictor("127.0.0.1:1", "tiny")
    else:
        client.GrpcPredictor("127.0.0.1:1", "tiny")  # constructs a stub; no call is made
