"""bin/evaluate.py and bin/export.py: the model configs load from any working directory, and a bad
--config (missing file, unknown override field, unknown variant) is one clear line with exit status 2."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK = os.path.join(ROOT, "configs", "mask_rcnn.py")


def _run(script, args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)  # as a user runs it: tfdet installed, configs/ found by the script itself
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script,required", [("evaluate.py", ["--annotations=a.json", "--checkpoint=ckpt"]),
                                             ("export.py", ["--export_dir=out"])])
@pytest.mark.parametrize("config,message", [
    ("no/such/config.py", r"cannot load the --config file.*no/such/config\.py"),
    (f"{MASK}:bogus", r"unknown option 'bogus'"),
    (f"{MASK}:tiny --config.model.rpn.nms_iouu=0.6", r"unknown config field .*nms_iouu"),
])
def test_bad_config_is_one_clear_line(script, required, config, message, tmp_path):
    config, *overrides = config.split()
    out = _run(script, [f"--config={config}", *overrides, *required], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert re.search(rf"{script}: error: .*{message}", out.stderr, re.S), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_export_loads_a_config_from_another_directory(tmp_path):
    out = _run("export.py", [f"--config={MASK}:tiny", f"--export_dir={tmp_path / 'export'}", "--input_type=image_tensor",
                             "--nowarmup"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.isfile(tmp_path / "export" / "1" / "saved_model.pb")


def test_rpn_config_evaluates_proposal_recall(tmp_path):
    """An RPN-only config's boxes are proposals: without --eval_types, evaluate.py reports recall."""
    ann = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200,
                            "iscrowd": 0}],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30],
                                                     "score": 0.9}]))
    for config, table in ((os.path.join(ROOT, "configs", "rpn.py") + ":tiny", "proposal (class-agnostic recall)"),
                          (MASK + ":tiny", "bbox (COCO)")):
        out = _run("evaluate.py", [f"--config={config}", f"--annotations={tmp_path / 'ann.json'}",
                                   f"--predictions={tmp_path / 'dets.json'}"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert table in out.stdout, out.stdout[-2000:]
