"""bin/convert.py and tfdet.zoo.files: a torchvision checkpoint (.npz of the Faster R-CNN fixture's
synthetic weights) becomes DIR/config.py + a tfdet checkpoint that tfdet.engine.checkpoint.restore loads
into the model the config builds, which then gives the fixture's detections; bad checkpoints give one
error and leave nothing written."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.zoo import fixtures_io
from tests.zoo.test_torchvision_models import DETECTION_ATOL, detection_rows, fixture_inputs, fixture_state_dict
from tests.zoo.test_torchvision_models import stored_rows
from tfdet.engine.checkpoint import restore, weights_by_path
from tfdet.modeling.detectors import build_detector
from tfdet.zoo import files, torchvision

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "fasterrcnn_resnet50_fpn"


def fixture_npz(tmp_path, edit=None):
    meta, arrays = fixtures_io.load("torchvision", NAME)
    sd = fixture_state_dict(meta, arrays)
    if edit:
        edit(sd)
    path = tmp_path / "source.npz"
    np.savez(path, **sd)  # what the README's torch one-liner writes: {key: array}
    return path


def load_config(path):
    spec = importlib.util.spec_from_file_location("converted_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def assert_reproduces_fixture(out):
    meta, arrays = fixtures_io.load("torchvision", NAME)
    config = load_config(out / "config.py")
    model = build_detector(config.model)
    restore(model, str(out))
    images, sizes = fixture_inputs(meta, arrays)
    detections = model.detect(images, sizes)
    for b in range(len(meta["images"])):
        fixtures_io.assert_same_rows(detection_rows(detections, b), stored_rows(arrays, b), DETECTION_ATOL,
                                     f"detections {b}")


def test_convert_then_restore_gives_the_fixture_detections(tmp_path):
    out = tmp_path / "converted"
    assert files.convert_torchvision(str(fixture_npz(tmp_path)), str(out)) == NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "source.npz"]  # no temporary left
    assert (out / "config.py").is_file() and (out / "checkpoint").is_file()
    assert_reproduces_fixture(out)


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "bin" / "convert.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_converts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    result = run_cli("--source=torchvision", f"--checkpoint={fixture_npz(tmp_path)}", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert NAME in result.stdout
    assert_reproduces_fixture(out)


def test_cli_bad_checkpoint_is_one_error_and_writes_nothing(tmp_path):
    def edit(sd):
        del sd["rpn.head.cls_logits.bias"]
        sd["roi_heads.box_head.fc7.weight"] = sd["roi_heads.box_head.fc7.weight"][:, :8]
        sd["unknown.weight"] = np.zeros(2, np.float32)

    out = tmp_path / "out"
    result = run_cli(f"--checkpoint={fixture_npz(tmp_path, edit)}", f"--out={out}", f"--arch={NAME}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("convert.py: error:")]
    assert len(errors) == 1, result.stderr
    for key in ("rpn.head.cls_logits.bias", "roi_heads.box_head.fc7.weight", "unknown.weight"):
        assert key in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.npz"]


def test_refuses_a_folder_with_files_and_unknown_arch(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        files.convert_torchvision(str(fixture_npz(tmp_path)), str(out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="unknown torchvision architecture 'retinanet_resnet101_fpn'"):
        files.convert_torchvision(str(fixture_npz(tmp_path)), str(tmp_path / "new"), arch="retinanet_resnet101_fpn")
    with pytest.raises(FileNotFoundError):
        files.convert_torchvision(str(tmp_path / "none.npz"), str(tmp_path / "new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source.npz"]


def test_num_classes_reinitializes_the_class_layers_only(tmp_path):
    out = tmp_path / "fine_tune"
    files.convert_torchvision(str(fixture_npz(tmp_path)), str(out), num_classes=3)
    config = load_config(out / "config.py")
    assert config.model.num_classes == 3
    model = build_detector(config.model)
    restore(model, str(out))
    meta, arrays = fixtures_io.load("torchvision", NAME)
    source = torchvision.convert(fixture_state_dict(meta, arrays), NAME)
    weights = {k: v.numpy() for k, v in weights_by_path(model).items()}
    assert weights["bbox_head/cls/kernel"].shape == (1024, 4) and weights["bbox_head/reg/kernel"].shape == (1024, 12)
    assert np.abs(weights["bbox_head/cls/kernel"]).max() > 0  # initialized, not zeros
    loaded = [k for k in weights if not k.startswith(torchvision.CLASS_LAYERS)]
    assert len(loaded) == len(weights) - 4
    for key in loaded:
        np.testing.assert_array_equal(weights[key], source[key])
    assert set(torchvision.convert(fixture_state_dict(meta, arrays), NAME, num_classes=3)) == set(loaded)
