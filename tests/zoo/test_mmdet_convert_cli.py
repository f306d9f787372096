"""bin/convert.py --source=mmdet and tfdet.zoo.files.convert_mmdet: an .npz of the Faster R-CNN fixture's
weights with the checkpoint's meta in `__meta__` (the README's one-liner) becomes DIR/config.py + a tfdet
checkpoint that gives the fixture's detections; a checkpoint without config needs --arch; bad keys are one
error; nothing is left behind by a failure."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.zoo import mmdet_fixture
from tests.zoo.test_convert_cli import load_config
from tests.zoo.test_mmdet_convert_models import checkpoint
from tfdet.engine.checkpoint import restore, weights_by_path
from tfdet.modeling.detectors import build_detector
from tfdet.zoo import files, mmdet

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "faster_rcnn_r50_fpn"


def mmdet_npz(tmp_path, layout="mmdet2", with_meta=True, edit=None):
    """What the README's torch one-liner writes of an mmdet checkpoint: its arrays and __meta__ (JSON)."""
    sd, meta = checkpoint(NAME, layout)
    if edit:
        edit(sd)
    path = tmp_path / "source.npz"
    np.savez(path, **sd, **({"__meta__": json.dumps(meta)} if with_meta else {}))
    return path


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "bin" / "convert.py"), "--source=mmdet", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def assert_reproduces_fixture(out):
    meta, arrays = mmdet_fixture.load(NAME)
    config = load_config(out / "config.py")
    assert config.data.category_ids[-1] == 90 and config.data.class_names[0] == "person"
    model = build_detector(config.model)
    restore(model, str(out))
    height, width = meta["batch_input_shape"]
    images = np.zeros((1, height, width, 3), np.float32)
    image = arrays["input/images"]
    images[:, :image.shape[1], :image.shape[2]] = image
    det = model.detect(images, np.array([meta["image"]["size"]], np.float32))
    count = int(det["num_detections"][0])
    mmdet_fixture.assert_same_set(det["detection_boxes"][0, :count], det["detection_scores"][0, :count],
                                  arrays["stage/det/boxes"], arrays["stage/det/scores"])
    np.testing.assert_array_equal(det["detection_classes"][0, :count], arrays["stage/det/labels"])


@pytest.mark.slow
def test_cli_converts_an_npz_with_its_meta(tmp_path):
    out = tmp_path / "out"
    result = run_cli(f"--checkpoint={mmdet_npz(tmp_path, 'mmdet3')}", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert NAME in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source.npz"]
    assert_reproduces_fixture(out)


def test_cli_without_config_needs_the_arch(tmp_path):
    result = run_cli(f"--checkpoint={mmdet_npz(tmp_path, with_meta=False)}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("convert.py: error:")]
    assert len(errors) == 1 and "pass --arch" in errors[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.npz"]


def test_cli_bad_keys_is_one_error_and_writes_nothing(tmp_path):
    def edit(sd):
        del sd["rpn_head.rpn_cls.bias"]
        sd["roi_head.bbox_head.fc_reg.weight"] = sd["roi_head.bbox_head.fc_reg.weight"][:8]
        sd["unknown.weight"] = np.zeros(2, np.float32)

    out = tmp_path / "out"
    result = run_cli(f"--checkpoint={mmdet_npz(tmp_path, with_meta=False, edit=edit)}", f"--out={out}",
                     "--arch=faster_rcnn_r50_fpn")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("convert.py: error:")]
    assert len(errors) == 1, result.stderr
    for key in ("rpn_head.rpn_cls.bias", "roi_head.bbox_head.fc_reg.weight (8, 1024)", "unknown.weight"):
        assert key in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.npz"]


@pytest.mark.slow
def test_num_classes_reinitializes_the_class_layers_only(tmp_path):
    out = tmp_path / "fine_tune"
    spec = files.convert_mmdet(str(mmdet_npz(tmp_path)), str(out), num_classes=3)
    assert spec["num_classes"] == 80
    config = load_config(out / "config.py")
    assert config.model.num_classes == 3 and list(config.data.category_ids) == [1, 2, 3]
    model = build_detector(config.model)
    restore(model, str(out))
    sd, _ = checkpoint(NAME, "mmdet2")
    source = mmdet.convert(sd, spec)
    weights = {k: v.numpy() for k, v in weights_by_path(model).items()}
    assert weights["bbox_head/cls/kernel"].shape == (1024, 4) and np.abs(weights["bbox_head/cls/kernel"]).max() > 0
    loaded = [k for k in weights if not k.startswith(mmdet.two_stage.CLASS_LAYERS)]
    assert len(loaded) == len(weights) - 4
    for key in loaded:
        np.testing.assert_array_equal(weights[key], source[key])
