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
"""

import glob
import json
import os

from absl import app, flags

import tfdet.cli

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


def read_annotations():
    if not FLAGS.annotations:
        return {}, {}
    with open(FLAGS.annotations) as f:
        data = json.load(f)
    names = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    ids = {os.path.basename(im["file_name"]): im["id"] for im in data.get("images", [])}
    return names, ids


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from tfdet.serving import client

    files = image_files()
    predictor = make_predictor()
    names, ids = read_annotations()
    image_ids = [ids.get(os.path.basename(f), i) for i, f in enumerate(files)]
    step = FLAGS.batch_size if FLAGS.input_type == "encoded_image" else 1
    results = []
    for start in range(0, len(files), step):
        chunk = files[start:start + step]
        data = [open(f, "rb").read() for f in chunk]
        if FLAGS.input_type == "encoded_image":
            inputs = {"encoded_images": np.array(data, object)}
        else:
            inputs = {"images": tf.io.decode_image(data[0], channels=3, expand_animations=False).numpy()[None]}
        outputs = predictor(inputs)
        batch = client.to_coco(outputs, image_ids[start:start + step], FLAGS.score_threshold)
        results.extend(batch)
        if FLAGS.render_dir:
            for f, image_id, raw in zip(chunk, image_ids[start:start + step], data):
                image = tf.io.decode_image(raw, channels=3, expand_animations=False).numpy()
                mine = [r for r in batch if r["image_id"] == image_id and r["score"] >= FLAGS.render_threshold]
                render(image, mine, names, os.path.join(FLAGS.render_dir, os.path.splitext(os.path.basename(f))[0] + ".png"))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(results, f)
    print(f"{len(results)} detections on {len(files)} images -> {FLAGS.output}")


def render(image, dets, names, path):
    from tfdet.evaluation import visualize

    colours = visualize.palette(max(len(names), 1))
    rank = {cat: i for i, cat in enumerate(sorted(names))}  # one colour per category
    labels = [f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}" for d in dets]
    visualize.write_png(path, visualize.draw_results(
        image, dets, labels, [colours[rank.get(d["category_id"], 0) % len(colours)] for d in dets]))


if __name__ == "__main__":
    tfdet.cli.run(main)  # errors: one line, exit 2 (usage) or 1
