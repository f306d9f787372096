"""Run an exported detector on image files: COCO-style results json and rendered PNGs.

    # a SavedModel folder (a version folder, or the base folder: its largest version):
    .venv/bin/python bin/predict.py --saved_model=export/mask_rcnn --images='photos/*.jpg' \
        --output=out/results.json --render_dir=out/png --annotations=val.json
    # TF Serving, REST (default port 8501) or gRPC (8500; needs `pip install tensorflow-serving-api`):
    .venv/bin/python bin/predict.py --server=http://localhost:8501 --model_name=mask_rcnn --images=...
    .venv/bin/python bin/predict.py --server=localhost:8500 --protocol=grpc --model_name=mask_rcnn ...

Images go to the encoded_image signature as their file bytes (--input_type=image_tensor decodes them
here and sends uint8 arrays, one image per request). image_id in the json is the file's index, or its
COCO id when --annotations lists the file name.

Category names for the renders: --annotations' categories, else --config's data.class_names (a converted
model's config, bin/convert.py: names of its data.category_ids), else the ids.

A file that cannot be read or decoded (the signature's image_status, or a request that fails for it
alone) is named on stderr and skipped; the others are processed and their results written. The exit
status is then 1, with a last line saying how many were skipped.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import tfdet.cli  # noqa: E402

flags.DEFINE_string("saved_model", "", "SavedModel folder (a version, or a base folder: its largest version)")
flags.DEFINE_string("server", "", "TF Serving address: http://host:8501 (REST) or host:8500 (--protocol=grpc)")
flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "how to talk to --server")
flags.DEFINE_string("model_name", "tfdet", "the model's name on the server")
flags.DEFINE_integer("model_version", None, "a version on the server (default: its latest)")
flags.DEFINE_enum("input_type", "encoded_image", ["encoded_image", "image_tensor"], "signature to call")
flags.DEFINE_list("images", None, "image files or glob patterns", required=True)
flags.DEFINE_integer("batch_size", 4, "images per request (encoded_image)")
flags.DEFINE_string("output", "results.json", "COCO-style results json")
flags.DEFINE_string("render_dir", "", "write <image name>.png with the detections drawn here")
flags.DEFINE_float("score_threshold", 0.0, "detections scoring below are not written")
flags.DEFINE_float("render_threshold", 0.3, "detections scoring below are not drawn")
flags.DEFINE_string("annotations", "", "COCO json: category names for the renders, image ids by file name")
_CONFIG = config_flags.DEFINE_config_file("config", None, "the model's config: category names for the renders "
                                          "from its data.category_ids / class_names (a converted model's)")
FLAGS = flags.FLAGS


def image_files():
    files = []
    for pattern in FLAGS.images:
        found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        missing = [f for f in found if not os.path.isfile(f)]
        if missing or not found:
            raise app.UsageError(f"--images: no image file {missing[0] if missing else pattern!r}.")
        files.extend(found)
    return files


def make_predictor():
    from tfdet.serving import client

    if bool(FLAGS.saved_model) == bool(FLAGS.server):
        raise app.UsageError("give exactly one of --saved_model and --server.")
    if FLAGS.server:
        cls = client.RestPredictor if FLAGS.protocol == "rest" else client.GrpcPredictor
        return cls(FLAGS.server, FLAGS.model_name, signature=FLAGS.input_type, version=FLAGS.model_version)
    path = FLAGS.saved_model
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = sorted((int(n) for n in os.listdir(path) if n.isdigit()), reverse=True) if os.path.isdir(path) else []
        if not versions:
            raise app.UsageError(f"--saved_model: no saved_model.pb in {path} nor in a version folder of it.")
        path = os.path.join(path, str(versions[0]))
    return client.LocalPredictor(path, signature=FLAGS.input_type)


def config_names():
    """{category id: name} of --config's data.category_ids / class_names ({} when it has none)."""
    data = (_CONFIG.value.get("data") or {}) if _CONFIG.value is not None else {}
    ids, names = data.get("category_ids"), data.get("class_names")
    if ids is None or names is None:
        return {}
    if len(ids) != len(names):
        raise ValueError(f"--config: data.category_ids has {len(ids)} ids but data.class_names {len(names)} names.")
    return {int(i): str(n) for i, n in zip(ids, names)}


def read_annotations():
    if not FLAGS.annotations:
        return config_names(), {}
    with open(FLAGS.annotations) as f:
        data = json.load(f)
    names = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    ids = {os.path.basename(im["file_name"]): im["id"] for im in data.get("images", [])}
    return names, ids


class Skipped(list):
    """The image files left out, each reported on stderr with why as it is found."""

    def add(self, path, reason):
        self.append(path)
        print(f"predict.py: skipped {path}: {reason}", file=sys.stderr, flush=True)


def first_line(error):
    text = (getattr(error, "message", None) or str(error)).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def read_images(files, skipped):
    """[(file, bytes)] of the files that can be read; the others are skipped."""
    out = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                out.append((f, fh.read()))
        except OSError as e:
            skipped.add(f, f"cannot be read ({e.strerror or e})")
    return out


def predict_encoded(predictor, items, skipped):
    """[(items, outputs)] of [(file, bytes)] through the encoded_image signature: one request, whose
    image_status marks the images that do not decode; if the request fails as a whole (a server or an
    export without per-image status), each image is sent alone and those that fail are skipped."""
    import numpy as np
    import tensorflow as tf

    try:
        return [(items, predictor({"encoded_images": np.array([data for _, data in items], object)}))]
    except (ValueError, tf.errors.OpError) as e:
        if len(items) == 1:
            skipped.add(items[0][0], f"rejected ({first_line(e)})")
            return []
    return [pair for item in items for pair in predict_encoded(predictor, [item], skipped)]


def predict_tensor(predictor, item, skipped):
    """[(item, outputs)] of one (file, bytes) decoded here and sent to the image_tensor signature."""
    import tensorflow as tf

    path, data = item
    try:
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as e:
        skipped.add(path, f"not a decodable image ({first_line(e)})")
        return []
    try:
        return [([item], predictor({"images": pixels[None]}))]
    except (ValueError, tf.errors.OpError) as e:
        skipped.add(path, f"rejected ({first_line(e)})")
        return []


def main(argv):
    del argv
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}.")
    predict_files()  # errors: tfdet.cli.run makes them one line


def predict_files():
    import numpy as np
    import tensorflow as tf

    from tfdet.evaluation import coco_eval, results

    files = image_files()
    predictor = make_predictor()
    names, ids = read_annotations()
    image_id = {f: ids.get(os.path.basename(f), i) for i, f in enumerate(files)}
    step = FLAGS.batch_size if FLAGS.input_type == "encoded_image" else 1
    skipped, detections, done = Skipped(), [], 0
    for start in range(0, len(files), step):
        items = read_images(files[start:start + step], skipped)
        if FLAGS.input_type == "encoded_image":
            answered = predict_encoded(predictor, items, skipped) if items else []
        else:
            answered = [pair for item in items for pair in predict_tensor(predictor, item, skipped)]
        for chunk, outputs in answered:
            status = np.asarray(outputs.get("image_status", np.zeros(len(chunk), np.int32)))
            for (f, _), s in zip(chunk, status):
                if s != 0:
                    skipped.add(f, "not a decodable image (the signature's image_status is 1)")
            found = results.serving_to_coco(outputs, [image_id[f] for f, _ in chunk], FLAGS.score_threshold)
            detections.extend(found)
            done += int(np.sum(status == 0))
            for (f, data), s in zip(chunk, status):
                if FLAGS.render_dir and s == 0:
                    mine = [r for r in found if r["image_id"] == image_id[f] and r["score"] >= FLAGS.render_threshold]
                    pixels = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
                    render(pixels, mine, names,
                           os.path.join(FLAGS.render_dir, os.path.splitext(os.path.basename(f))[0] + ".png"))
    coco_eval.write_json_atomic(FLAGS.output, detections)
    print(f"{len(detections)} detections on {done} images -> {FLAGS.output}")
    if skipped:
        sys.exit(f"predict.py: {len(skipped)} of {len(files)} images were skipped (named above); the results of "
                 f"the other {done} are in {FLAGS.output}.")


def render(image, dets, names, path):
    from tfdet.evaluation import visualize

    colours = visualize.palette(max(len(names), 1))
    rank = {cat: i for i, cat in enumerate(sorted(names))}  # one colour per category
    labels = [f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}" for d in dets]
    visualize.write_png(path, visualize.draw_results(
        image, dets, labels, [colours[rank.get(d["category_id"], 0) % len(colours)] for d in dets]))


if __name__ == "__main__":
    tfdet.cli.run(main, config_flag=_CONFIG)  # errors: one line, exit 2 (usage) or 1
