"""bin/evaluate.py and its runner: predictions path vs pycocotools directly, model paths (checkpoint,
SavedModel, watch) with a fake detector derived from ground truth, TTA, visualization, bad inputs."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfdet.engine.checkpoint import weights_by_path
from tfdet.engine import checkpoint, strategy
from tfdet.evaluation import loaders, runner
from tests.evaluation.fakes import make_gt_detector, save_as_saved_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _known_predictions(ann_file, path, seed=0):
    """Jittered ground truth written straight from the annotation json, plus a few false positives."""
    rng = np.random.default_rng(seed)
    with open(ann_file) as f:
        data = json.load(f)
    dets = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.2, 1)),
                     "bbox": [x + float(rng.uniform(-3, 3)), y + float(rng.uniform(-3, 3)), w, h]})
        dets.append({"image_id": a["image_id"], "category_id": data["categories"][0]["id"],
                     "score": float(rng.uniform(0, 0.5)), "bbox": [1.0, 2.0, 20.0, 30.0]})
    with open(path, "w") as f:
        json.dump(dets, f)


def _pycocotools_stats(ann_file, res_file):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        ev = COCOeval(gt, gt.loadRes(res_file), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def test_cli_predictions_give_exactly_pycocotools_ap(shapes_val, tmp_path):
    res = str(tmp_path / "dets.json")
    _known_predictions(shapes_val.ann_file, res)
    metrics = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "evaluate.py"),
                           f"--annotations={shapes_val.ann_file}", f"--predictions={res}", f"--metrics_output={metrics}"],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(metrics.read_text())
    assert list(report) == ["bbox"]
    assert list(report["bbox"]["metrics"].values()) == _pycocotools_stats(shapes_val.ann_file, res)
    assert 0 < report["bbox"]["metrics"]["AP"] < 1
    assert "AP50" in proc.stdout and "per-class AP" in proc.stdout and "circle" in proc.stdout


def test_cli_bad_inputs_give_one_clear_line(shapes_val, tmp_path):
    no_cats = tmp_path / "no_cats.json"
    no_cats.write_text(json.dumps({"images": [], "annotations": []}))
    res = tmp_path / "dets.json"
    res.write_text("[]")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "evaluate.py"), f"--annotations={no_cats}",
                           f"--predictions={res}"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 1
    assert "no 'categories'" in proc.stderr and "Traceback" not in proc.stderr


def _settings(shapes_val, tmp_path, **kw):
    return runner.EvalSettings(annotations=shapes_val.ann_file, images=shapes_val.image_dir,
                            output=str(tmp_path / "results.json"), scale=(160, 100), **kw)


def test_model_path_perfect_detections_ap_one(shapes_val, reader, tmp_path):
    model = make_gt_detector(reader)
    report = runner.run(_settings(shapes_val, tmp_path, batch_size=2), loaders.keras_predict_fn(model),
                     print_fn=lambda s: None)
    assert report["bbox"]["metrics"]["AP"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert len(written) == sum(r.num_instances for r in reader.records)
    assert json.loads((tmp_path / "results.metrics.json").read_text())["bbox"]["metrics"]["AP"] == pytest.approx(1.0)


def test_model_path_from_tfrecords(shapes_val, reader, tmp_path):
    from tfdet.data import tfrecords

    prefix = str(tmp_path / "records" / "val")
    tfrecords.write_tfrecords(reader, prefix, num_shards=2, with_masks=False)
    s = runner.EvalSettings(annotations=shapes_val.ann_file, images=str(tmp_path / "no_images_needed"),
                            tfrecords=prefix, scale=(160, 100), batch_size=2)
    report = runner.run(s, loaders.keras_predict_fn(make_gt_detector(reader)), print_fn=lambda s: None)
    assert report["bbox"]["metrics"]["AP"] == pytest.approx(1.0)


def test_model_path_with_multiscale_tta(shapes_val, reader, tmp_path):
    model = make_gt_detector(reader)
    s = _settings(shapes_val, tmp_path, tta_scales=((160, 100), (250, 150)), tta_merge="soft_nms")
    report = runner.run(s, loaders.keras_predict_fn(model), print_fn=lambda s: None)
    assert report["bbox"]["metrics"]["AP"] == pytest.approx(1.0)


def _save_checkpoint(model, folder, step):
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(weights=weights_by_path(model)), folder, max_to_keep=10)
    return manager.save(checkpoint_number=step)


def test_checkpoint_and_saved_model_paths_agree(shapes_val, reader, tmp_path):
    trained = make_gt_detector(reader, offset=0.0)
    ckpt = _save_checkpoint(trained, str(tmp_path / "work"), 100)
    quiet = lambda s: None  # noqa: E731
    build = lambda: make_gt_detector(reader, offset=25.0)  # noqa: E731 (wrong until restored)
    before = runner.run(_settings(shapes_val, tmp_path), loaders.keras_predict_fn(build()), print_fn=quiet)
    from_ckpt = runner.run_checkpoint(_settings(shapes_val, tmp_path), build, str(tmp_path / "work"), print_fn=quiet)
    assert before["bbox"]["metrics"]["AP"] < 0.5 and from_ckpt["bbox"]["metrics"]["AP"] == pytest.approx(1.0)

    restored = build()
    checkpoint.restore(restored, ckpt)

    export = str(tmp_path / "export")
    save_as_saved_model(restored, export)
    saved = runner.run(_settings(shapes_val, tmp_path), loaders.saved_model_predict_fn(export), print_fn=quiet)
    assert saved == from_ckpt


def test_checkpoint_of_another_model_is_a_clear_error(reader, tmp_path):
    other = make_gt_detector(reader, extra_weight_shape=(3,))
    _save_checkpoint(other, str(tmp_path / "other"), 1)
    with pytest.raises(ValueError, match="does not fit the model"):
        checkpoint.restore(make_gt_detector(reader, extra_weight_shape=(4,)), str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.resolve_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        loaders.saved_model_predict_fn(str(tmp_path))


def test_a_training_workdir_resolves_to_its_latest_checkpoint(reader, tmp_path):
    """bin/train writes <workdir>/checkpoints/; --checkpoint=<workdir> takes the newest one there."""
    folder = str(tmp_path / "work" / "checkpoints")
    for step in (5, 9):
        _save_checkpoint(make_gt_detector(reader), folder, step)
    path = checkpoint.resolve_checkpoint(str(tmp_path / "work"))
    assert path.startswith(folder) and path.endswith("-9"), path


def test_watch_evaluates_each_checkpoint_in_order(shapes_val, reader, tmp_path):
    work = str(tmp_path / "work")
    for step, offset in ((10, 6.0), (20, 0.0)):
        _save_checkpoint(make_gt_detector(reader, offset=offset), work, step)
    metrics = str(tmp_path / "watch.json")
    s = _settings(shapes_val, tmp_path, metrics_output=metrics)
    reports = runner.run_watch(s, lambda: make_gt_detector(reader, offset=50.0), work, timeout=0.0,
                            print_fn=lambda s: None)
    names = [os.path.basename(c) for c in reports]
    assert names == ["ckpt-10", "ckpt-20"]
    aps = [r["bbox"]["metrics"]["AP"] for r in reports.values()]
    assert aps[0] < aps[1] == pytest.approx(1.0)
    assert list(json.loads(open(metrics).read())) == list(reports)
    assert os.path.isfile(str(tmp_path / "results-ckpt-20.json"))
    # A last step stops the watch there.
    assert len(runner.run_watch(s, lambda: make_gt_detector(reader), work, last_step=10, print_fn=lambda s: None)) == 1


def test_proposal_recall_path_matches_class_agnostic_cocoeval(shapes_val, reader, tmp_path):
    res = str(tmp_path / "proposals.json")
    _known_predictions(shapes_val.ann_file, res, seed=4)
    s = runner.EvalSettings(annotations=shapes_val.ann_file, predictions=res, eval_types=("proposal", "bbox"))
    lines = []
    report = runner.run(s, print_fn=lines.append)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(shapes_val.ann_file)
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert list(report["proposal"]["metrics"].values()) == [float(v) for v in ev.stats[6:12]]
    assert "AR@1000" in lines[0] and "per_class" not in report["proposal"]
    assert json.loads(open(str(tmp_path / "proposals.metrics.json")).read())["proposal"] == report["proposal"]


def test_visualize_writes_pngs(shapes_val, reader, tmp_path):
    res = str(tmp_path / "dets.json")
    _known_predictions(shapes_val.ann_file, res)
    s = runner.EvalSettings(annotations=shapes_val.ann_file, images=shapes_val.image_dir, predictions=res, visualize=2,
                         visualize_dir=str(tmp_path / "vis"), visualize_score_threshold=0.0)
    runner.run(s, print_fn=lambda s: None)
    files = sorted(os.listdir(tmp_path / "vis"))
    assert files == sorted(f"{r.image_id}.png" for r in reader.records[:2])
    rec = reader.records[0]
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "vis" / f"{rec.image_id}.png"))).numpy()
    factor = -(-480 // max(rec.height, rec.width))  # small images are drawn enlarged (visualize.draw_results)
    assert png.shape == (rec.height * factor, rec.width * factor, 3)


def test_bad_inputs(shapes_val, reader, tmp_path):
    model = loaders.keras_predict_fn(make_gt_detector(reader))
    with pytest.raises(ValueError, match="exactly one of"):
        runner.run(runner.EvalSettings(annotations=shapes_val.ann_file, predictions="x.json"), model)
    with pytest.raises(ValueError, match="exactly one of"):
        runner.run(runner.EvalSettings(annotations=shapes_val.ann_file))
    # An annotation file whose image is missing: the error names the file.
    images = tmp_path / "images"
    shutil.copytree(shapes_val.image_dir, images)
    missing = reader.records[1].file_name
    os.remove(images / os.path.basename(missing))
    with pytest.raises(FileNotFoundError, match=os.path.basename(missing)):
        runner.run(runner.EvalSettings(annotations=shapes_val.ann_file, images=str(images)), model)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        runner.run(runner.EvalSettings(annotations=shapes_val.ann_file, images=str(tmp_path / "nope")), model)
    with pytest.raises(ValueError, match="scales must look like"):
        runner.parse_scales("900,600")


def test_mirrored_strategy_gives_the_single_device_metrics():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "_mirrored_eval.py")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["replicas"] == 2 and got["same"] and 0.2 < got["ap"] < 1.0  # restored (offset 1.5, not 40)


def test_evaluation_strategies():
    for name in runner.STRATEGIES:
        assert name in strategy.STRATEGIES  # bin/evaluate.py's --strategy values, built by the engine
    assert strategy.build_strategy("default").num_replicas_in_sync == 1
    assert strategy.build_strategy("one_device").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy must be one of"):
        strategy.build_strategy("tpu_pod")
