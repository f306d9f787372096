"""The README's main job (bin/demo.py) end to end: shapes data, Mask R-CNN training, COCO evaluation,
SavedModel export, drawings of the exported model's predictions — and the demo's accuracy targets (bin/demo.py TARGETS)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_main_job_meets_its_targets(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TFDET_DATA_DIR=str(tmp_path / "data"))
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "demo.py"), f"--out={out}", "--render=3"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ap"]["bbox"] >= 0.5 and summary["ap"]["segm"] >= 0.4, summary
    assert "box AP" in proc.stdout and "segm (COCO)" in proc.stdout  # the tables and the summary are printed
    assert os.path.isfile(out / "export" / "1" / "saved_model.pb")
    pngs = sorted(os.listdir(out / "predictions"))
    assert len(pngs) == 3
    drawn = tf.io.decode_png(tf.io.read_file(str(out / "predictions" / pngs[0]))).numpy()
    original = tf.io.decode_png(tf.io.read_file(str(tmp_path / "data" / "shapes" / "val" / "images" / pngs[0])))
    factor = drawn.shape[0] // original.shape[0]
    assert factor >= 1 and (drawn != np.repeat(np.repeat(original.numpy(), factor, 0), factor, 1)).any()
