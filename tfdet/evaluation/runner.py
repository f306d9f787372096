"""What `bin/evaluate.py` runs, as plain functions of an `EvalSettings` (the flags), so tests can run it.

Paths:
  predictions  evaluate a COCO results json (`--predictions`) against `--annotations`;
  model        run a PredictFn (from `--checkpoint` + `--config`, `--saved_model`, or any callable) over
               the annotated images, optionally with test-time augmentation, write the results json
               (`--output`) and evaluate them; a tfdet export (`--saved_model` of bin/export.py's, a
               `loaders.ServingPredictFn`) gets the image files as a client sends them and its results
               are taken as they are (`predict_serving`);
  watch        evaluate every checkpoint of a training folder as it appears (`--watch`).
Each path prints the COCO tables (and per-class AP), writes them as json (`--metrics_output`, default
`<output>.metrics.json`) and can render `--visualize N` images with their detections.

The model paths refuse to report AP when an annotated image was not run (its file is missing, does not
decode, or is absent from the TFRecords): its objects would count as missed. With `allow_missing`
(`--allow_missing`) such images are left out of the ground truth and their number is printed.
"""

import dataclasses
import logging
import os

import tensorflow as tf

from tfdet.data import coco, pipeline
from tfdet.engine.checkpoint import restore
from tfdet.evaluation import coco_eval, evaluator, loaders, results as results_lib, tta

log = logging.getLogger(__name__)

STRATEGIES = ("default", "one_device", "mirrored")  # the --strategy values evaluation supports (engine.strategy)


@dataclasses.dataclass
class EvalSettings:
    annotations: str
    images: str = ""                      # image folder (default: the annotations' folder)
    tfrecords: str = ""                   # or: TFRecords prefix (tfdet.data.tfrecords) holding the images
    predictions: str = ""                 # evaluate this results json instead of running a model
    output: str = ""                      # results json written by the model path
    metrics_output: str = ""              # tables as json (default <output>.metrics.json when output is set)
    eval_types: tuple = ()                # bbox / segm / keypoints / proposal; () = what the results hold
    batch_size: int = 1
    scale: tuple = (1333, 800)            # single-scale test size (long, short)
    score_threshold: float = 0.0          # detections below are not written
    mask_threshold: float = 0.5
    kpt_oks_sigmas: tuple = None
    tta_scales: tuple = ()                # test-time scales (long, short); () = no multi-scale
    tta_flip: bool = False
    tta_merge: str = "nms"                # nms | soft_nms
    tta_iou_threshold: float = 0.5
    max_detections: int = 100
    visualize: int = 0                    # render this many images
    visualize_dir: str = ""               # default <metrics_output folder>/visualize
    visualize_score_threshold: float = 0.3
    allow_missing: bool = False           # evaluate without the images that could not be run
    category_ids: tuple = None            # category id of each model class (None: the annotations' in id order)
    size_rule: str = "round"              # the test resize's size rule (tfdet.data.augment.keep_ratio_size)


def metrics_path(s):
    if s.metrics_output:
        return s.metrics_output
    if s.output:
        return os.path.splitext(s.output)[0] + ".metrics.json"
    if s.predictions:
        return os.path.splitext(s.predictions)[0] + ".metrics.json"
    return ""


def open_annotations(s, need_images):
    image_dir = s.images or os.path.dirname(os.path.abspath(s.annotations))
    if need_images and not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    return coco.CocoReader(s.annotations, image_dir, check_images="header" if need_images else "none")


def class_to_category(s, reader):
    """{model class: category id}: `s.category_ids` (a converted model's, config.data.category_ids) when
    set, else the reader's (class c = the c-th annotated category in id order)."""
    if s.category_ids is None:
        return reader.class_to_category
    return dict(enumerate(int(c) for c in s.category_ids))


def annotated_only(results, reader):
    """The results whose category is annotated (a converted model may have more, e.g. torchvision's 90 COCO
    labels with 10 unused ids); the others are counted in a warning, not evaluated nor written."""
    known = set(reader.category_ids)
    kept = [r for r in results if r["category_id"] in known]
    if len(kept) < len(results):
        dropped = sorted({r["category_id"] for r in results} - known)
        log.warning("%d detections of category ids the annotations do not have (%s) are left out.",
                    len(results) - len(kept), ", ".join(str(c) for c in dropped[:10]))
    return kept


def predict(s, reader, predict_fn):
    """(COCO results of `predict_fn` over the reader's images (single scale, or TTA when asked), the set of
    image ids it ran on)."""
    if isinstance(predict_fn, loaders.ServingPredictFn):
        return predict_serving(s, reader, predict_fn)
    ran = set()
    categories = class_to_category(s, reader)
    if s.tta_scales or s.tta_flip:
        if s.tfrecords:
            raise ValueError("test-time augmentation reads the image files; give --images, not --tfrecords.")
        out = []
        for rec in reader.records:
            try:
                image = tf.io.decode_image(tf.io.read_file(rec.file_name), channels=3, expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
                log.warning("image id %d (%s) is not evaluated: %s", rec.image_id, rec.file_name,
                            e.message.splitlines()[0])
                continue
            ran.add(rec.image_id)
            outputs, info = tta.tta_predict(
                predict_fn, image, s.tta_scales or [s.scale], s.tta_flip, s.tta_merge, s.tta_iou_threshold,
                s.max_detections, flip_map=reader.keypoint_flip_map if reader.num_keypoints else None,
                image_id=rec.image_id)
            out += results_lib.detections_to_coco(outputs, info, [rec.image_id], categories,
                                                  s.mask_threshold, s.score_threshold)
        return annotated_only(out, reader) if s.category_ids is not None else out, ran
    options = pipeline.InputOptions(batch_size=s.batch_size, training=False, scale=tuple(s.scale), max_instances=1,
                                    mask_size=0, with_keypoints=False, size_rule=s.size_rule)
    if s.tfrecords:
        batches = pipeline.from_tfrecords(s.tfrecords, options).as_numpy_iterator()
    else:
        batches = pipeline.from_coco(reader, options).as_numpy_iterator()
    out = evaluator.predict_results(predict_fn, batches, categories, s.score_threshold,
                                    s.mask_threshold, on_batch=lambda batch, _: ran.update(batch["image_id"].tolist()))
    return annotated_only(out, reader) if s.category_ids is not None else out, ran


def encoded_images(s, reader):
    """(image id, the image file's bytes) of every annotated image, in id order: read from `s.tfrecords`
    (their image/encoded, for the image ids the annotations have) when set, else from the files (one that cannot be read is left out, with a
    warning)."""
    if s.tfrecords:
        from tfdet.data import tfrecords

        meta = tfrecords.read_metadata(s.tfrecords)
        spec = {"image/id": tf.io.FixedLenFeature([], tf.int64), "image/encoded": tf.io.FixedLenFeature([], tf.string)}
        found = {}
        for serialized in tf.data.TFRecordDataset(tfrecords.shard_paths(s.tfrecords, meta["num_shards"])):
            f = tf.io.parse_single_example(serialized, spec)
            if int(f["image/id"]) in reader.coco.imgs:  # (records of images the annotations lack are not run)
                found[int(f["image/id"])] = f["image/encoded"].numpy()
        yield from sorted(found.items())
        return
    for rec in reader.records:
        try:
            with open(rec.file_name, "rb") as f:
                yield rec.image_id, f.read()
        except OSError as e:
            log.warning("image id %d (%s) is not evaluated: %s", rec.image_id, rec.file_name, e.strerror or e)


def predict_serving(s, reader, export):
    """(COCO results, the set of image ids run) of a tfdet.serving export (`loaders.ServingPredictFn`)
    over the reader's images, each sent as its signature takes them: the file's bytes (encoded_image,
    `s.batch_size` per request) or the decoded uint8 image (image_tensor, one per request). The export
    resizes, pads and maps back itself and returns category ids: its results are taken as they are (no
    class mapping; detections of ids the annotations lack are left out, `annotated_only`)."""
    if s.tta_scales or s.tta_flip:
        raise ValueError(f"test-time augmentation resizes the images before the model; the SavedModel {export.path} "
                         "resizes them itself, as exported: evaluate it without --tta_scales / --tta_flip, or "
                         "evaluate its checkpoint (--config --checkpoint) with them.")
    ran, out = set(), []

    def run_batch(ids, images):
        outputs = export(images)
        for image_id, status in zip(ids, outputs["image_status"] if "image_status" in outputs else [0] * len(ids)):
            if status == 0:
                ran.add(image_id)
            else:
                log.warning("image id %d is not evaluated: the SavedModel could not decode it (image_status %d).",
                            image_id, status)
        out.extend(results_lib.serving_to_coco(outputs, ids, s.score_threshold, s.mask_threshold))

    ids, pending = [], []
    for image_id, data in encoded_images(s, reader):
        if export.kind == "image_tensor":
            try:
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
            except tf.errors.InvalidArgumentError as e:
                log.warning("image id %d is not evaluated: %s", image_id, e.message.splitlines()[0])
                continue
            run_batch([image_id], image)
            continue
        ids.append(image_id)
        pending.append(data)
        if len(ids) == max(int(s.batch_size), 1):
            run_batch(ids, pending)
            ids, pending = [], []
    if ids:
        run_batch(ids, pending)
    return annotated_only(out, reader), ran


def ground_truth_of(coco_gt, ran, s, print_fn=print, missing_files=False):
    """The ground truth to evaluate the images in `ran` against: `coco_gt` when every image ran; without
    the others when `s.allow_missing` (said with `print_fn`); else an error naming them (FileNotFoundError
    when `missing_files`, i.e. some image files do not exist)."""
    missing = sorted(set(coco_gt.getImgIds()) - set(ran))
    if not missing:
        return coco_gt
    total = len(coco_gt.getImgIds())
    names = ", ".join(str(coco_gt.imgs[i].get("file_name", i)) for i in missing[:3]) + (", ..." if len(missing) > 3
                                                                                        else "")
    what = f"{len(missing)} of the {total} annotated images could not be read or decoded ({names})"
    if not s.allow_missing:
        error = FileNotFoundError if missing_files else ValueError
        raise error(f"{what}: refusing to report AP, which would count their objects as missed. Fix or remove "
                    f"them, or pass --allow_missing to evaluate the other {total - len(missing)} without them.")
    print_fn(f"--allow_missing: {what}; evaluating the other {total - len(missing)} images without them.")
    skip = set(missing)
    data = coco_gt.dataset
    return coco_eval.coco_from_dataset(dict(data, images=[im for im in data["images"] if im["id"] not in skip],
                                            annotations=[a for a in data["annotations"] if a["image_id"] not in skip]))


def run(s, predict_fn=None, print_fn=print):
    """One evaluation: the predictions path when `s.predictions` is set, else the model path with
    `predict_fn`. Returns the report {eval type: {"metrics", "per_class"}}."""
    if bool(s.predictions) == (predict_fn is not None):
        raise ValueError("give exactly one of a predictions file and a model (checkpoint / SavedModel) to evaluate.")
    reader = open_annotations(s, need_images=(predict_fn is not None and not s.tfrecords) or s.visualize > 0)
    coco_gt = reader.coco
    if s.predictions:
        results = coco_eval.load_results(s.predictions, reader.coco)
    else:
        results, ran = predict(s, reader, predict_fn)
        coco_gt = ground_truth_of(reader.coco, ran, s, print_fn, missing_files=reader.stats["missing_images"] > 0)
        if s.output:
            coco_eval.write_json_atomic(s.output, results)
            log.info("wrote %d detections to %s", len(results), s.output)
    report = evaluator.evaluate_results(coco_gt, results, s.eval_types or None, s.kpt_oks_sigmas)
    print_fn(evaluator.format_report(report))
    path = metrics_path(s)
    if path:
        coco_eval.write_json_atomic(path, report)
    if s.visualize:
        from tfdet.evaluation import visualize

        folder = s.visualize_dir or os.path.join(os.path.dirname(os.path.abspath(path or s.annotations)), "visualize")
        visualize.render_results(reader, results, folder, s.visualize, s.visualize_score_threshold)
    return report


def run_checkpoint(s, build_model, checkpoint, print_fn=print, strategy=None):
    """The model path for one checkpoint: `build_model()` -> a built Keras model, restored from it; with
    a tf.distribute `strategy`, built under its scope and run on all its replicas."""
    if strategy is None:
        model = build_model()
        restore(model, checkpoint)
        return run(s, loaders.keras_predict_fn(model), print_fn)
    with strategy.scope():
        model = build_model()
        restore(model, checkpoint)
    return run(s, loaders.distributed_predict_fn(strategy, model), print_fn)


def run_watch(s, build_model, folder, timeout=0.0, poll_seconds=10.0, last_step=None, print_fn=print,
              strategy=None):
    """Evaluates every checkpoint of `folder` as training writes it; the metrics json maps each
    checkpoint to its report (rewritten atomically after each). Returns that mapping."""
    all_reports = {}
    path = metrics_path(s)

    def evaluate(ckpt):
        print_fn(f"== {ckpt}")
        one = dataclasses.replace(s, metrics_output="", output=_suffixed(s.output, ckpt))
        all_reports[ckpt] = run_checkpoint(one, build_model, ckpt, print_fn, strategy)
        if path:
            coco_eval.write_json_atomic(path, all_reports)

    done = None if last_step is None else (lambda c: loaders.checkpoint_step(c) >= last_step)
    loaders.watch(folder, evaluate, timeout, poll_seconds, done)
    return all_reports


def _suffixed(output, ckpt):
    if not output:
        return ""
    stem, ext = os.path.splitext(output)
    return f"{stem}-{os.path.basename(ckpt).split('.')[0]}{ext}"


def parse_scales(text):
    """'900x600,1200x800' -> ((900, 600), (1200, 800)); 'seeds' -> tta.SEED_SCALES; '' -> ()."""
    if not text:
        return ()
    if text == "seeds":
        return tta.SEED_SCALES
    try:
        scales = tuple(tuple(int(v) for v in part.split("x")) for part in text.split(","))
    except ValueError:
        scales = ()
    if not scales or any(len(s) != 2 or min(s) <= 0 for s in scales):
        raise ValueError(f"scales must look like '900x600,1200x800' (long x short) or 'seeds', got {text!r}.")
    return scales


__all__ = ["EvalSettings", "parse_scales", "run", "run_checkpoint", "run_watch"]
