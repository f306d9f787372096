"""docs/extending.md, shown: parts defined outside tfdet (tests/extending/parts.py: a backbone by module
path, a 1-conv box head and a detector registered by name) train, evaluate, export and predict
through the command-line tools, like built-in parts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.engine import tiny_config
from tfdet.data import shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "tests/extending/plug_config.py"


@pytest.fixture(scope="module")
def shapes_split(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("plug_shapes") / "shapes")
    return root, shapes.ensure_shapes(root, **tiny_config.SHAPES)


def run_bin(name, *args, shapes_dir):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", TFDET_TEST_SHAPES_DIR=shapes_dir)
    out = subprocess.run([sys.executable, os.path.join("bin", name), *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, f"{name} {args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_plugin_parts_build_from_the_config(shapes_split, monkeypatch):
    from tests.extending import parts, plug_config
    from tfdet.modeling.detectors import build_detector

    monkeypatch.setenv("TFDET_TEST_SHAPES_DIR", shapes_split[0])
    model = build_detector(plug_config.get_config().model)
    assert isinstance(model, parts.PlugRCNN) and isinstance(model.bbox_head, parts.OneConvBoxHead)
    assert model.backbone.name == "plug_net" and model.bbox_head.channels == 16


@pytest.mark.slow
def test_plugin_detector_trains_evaluates_exports_and_predicts(shapes_split, tmp_path):
    root, split = shapes_split
    workdir = str(tmp_path / "run")
    train = run_bin("train.py", f"--config={CONFIG}", f"--workdir={workdir}", "--verbose=2", shapes_dir=root)
    assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-6.index")), train.stdout[-2000:]
    losses = [float(line.split("loss ")[1].split()[0]) for line in train.stdout.splitlines()
              if line.startswith("step ") and " loss " in line]
    assert len(losses) == 6 and np.isfinite(losses).all(), train.stdout[-2000:]

    val = split["val"]
    results = str(tmp_path / "results.json")
    run_bin("evaluate.py", f"--config={CONFIG}", f"--checkpoint={workdir}", f"--annotations={val.ann_file}",
            f"--images={val.image_dir}", f"--output={results}", "--scale=128x96", shapes_dir=root)
    with open(str(tmp_path / "results.metrics.json")) as f:
        metrics = json.load(f)
    assert "bbox" in json.dumps(metrics) and os.path.getsize(results) > 2

    export_dir = str(tmp_path / "export")
    run_bin("export.py", f"--config={CONFIG}", f"--checkpoint={workdir}", f"--export_dir={export_dir}",
            "--input_type=encoded_image", "--scale=128x96", shapes_dir=root)
    assert os.path.exists(os.path.join(export_dir, "1", "saved_model.pb"))

    image = sorted(os.listdir(val.image_dir))[0]
    predictions = str(tmp_path / "predictions.json")
    run_bin("predict.py", f"--saved_model={export_dir}", f"--images={os.path.join(val.image_dir, image)}",
            f"--output={predictions}", shapes_dir=root)
    with open(predictions) as f:
        assert isinstance(json.load(f), list)
