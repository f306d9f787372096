"""An annotated image that cannot be run (a file that does not decode, or is missing) must not be scored as
an image whose objects were all missed: evaluation refuses to report AP, unless --allow_missing, which
leaves it out of the ground truth and says so."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.evaluation.fakes import make_gt_detector, save_as_saved_model
from tfdet.evaluation import evaluator, loaders, runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def damaged(shapes_val, reader, tmp_path):
    """(image folder, file name) of a copy of the val images whose second image is garbage behind a valid
    PNG signature: the header check passes, decoding fails."""
    folder = tmp_path / "images"
    shutil.copytree(shapes_val.image_dir, folder)
    name = os.path.basename(reader.records[1].file_name)
    (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return str(folder), name


def _settings(shapes_val, folder, tmp_path, **kw):
    return runner.EvalSettings(annotations=shapes_val.ann_file, images=folder, output=str(tmp_path / "out.json"),
                               scale=(160, 100), batch_size=2, **kw)


def test_an_undecodable_image_stops_evaluation_unless_allowed(shapes_val, reader, damaged, tmp_path):
    folder, name = damaged
    predict_fn = loaders.keras_predict_fn(make_gt_detector(reader))
    with pytest.raises(ValueError, match=rf"1 of the 3 annotated images could not be read or decoded \({name}\): "
                                         r"refusing to report AP.*--allow_missing to evaluate the other 2"):
        runner.run(_settings(shapes_val, folder, tmp_path), predict_fn, print_fn=lambda line: None)
    assert not os.path.exists(tmp_path / "out.json")  # nothing written for a refused run
    lines = []
    report = runner.run(_settings(shapes_val, folder, tmp_path, allow_missing=True), predict_fn,
                        print_fn=lines.append)
    assert f"--allow_missing: 1 of the 3 annotated images could not be read or decoded ({name}); evaluating the " \
           "other 2 images without them." == lines[0]
    assert report["bbox"]["metrics"]["AP"] == pytest.approx(1.0)  # perfect detections on the images that ran
    results = json.loads((tmp_path / "out.json").read_text())
    assert {r["image_id"] for r in results} == {reader.records[0].image_id, reader.records[2].image_id}
    # Scored against the whole ground truth, the skipped image's objects would have counted as missed.
    whole = evaluator.evaluate_results(reader.coco, results)
    assert whole["bbox"]["metrics"]["AR100"] < 0.9


def test_the_tta_path_also_refuses(shapes_val, reader, damaged, tmp_path):
    folder, name = damaged
    s = _settings(shapes_val, folder, tmp_path, tta_flip=True)
    with pytest.raises(ValueError, match=rf"\({name}\): refusing to report AP"):
        runner.run(s, loaders.keras_predict_fn(make_gt_detector(reader)), print_fn=lambda line: None)


def test_images_missing_from_the_tfrecords_are_missing_images(shapes_val, reader, tmp_path):
    from tfdet.data import coco, tfrecords

    partial = coco.CocoReader(shapes_val.ann_file, shapes_val.image_dir)
    partial.records = partial.records[:2]
    prefix = str(tmp_path / "records" / "val")
    tfrecords.write_tfrecords(partial, prefix, with_masks=False)
    s = runner.EvalSettings(annotations=shapes_val.ann_file, images=str(tmp_path / "unused"), tfrecords=prefix,
                            scale=(160, 100))
    predict_fn = loaders.keras_predict_fn(make_gt_detector(reader))
    with pytest.raises(ValueError, match="1 of the 3 annotated images could not be read or decoded"):
        runner.run(s, predict_fn, print_fn=lambda line: None)
    s.allow_missing = True
    assert runner.run(s, predict_fn, print_fn=lambda line: None)["bbox"]["metrics"]["AP"] == pytest.approx(1.0)


def test_cli_refuses_in_one_line_and_allow_missing_evaluates_the_rest(shapes_val, reader, damaged, tmp_path):
    folder, name = damaged
    export = str(tmp_path / "export")
    save_as_saved_model(make_gt_detector(reader), export)
    args = [sys.executable, os.path.join(ROOT, "bin", "evaluate.py"), f"--annotations={shapes_val.ann_file}",
            f"--images={folder}", f"--saved_model={export}", "--scale=160x100",
            f"--metrics_output={tmp_path / 'm.json'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    refused = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert f"could not be read or decoded ({name}): refusing to report AP" in refused.stderr
    assert "Traceback" not in refused.stderr and not os.path.exists(tmp_path / "m.json")
    allowed = subprocess.run(args + ["--allow_missing"], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "evaluating the other 2 images without them" in allowed.stdout
    assert json.loads((tmp_path / "m.json").read_text())["bbox"]["metrics"]["AP"] == pytest.approx(1.0)
