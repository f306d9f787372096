"""1 device vs a 2-replica MirroredStrategy (two logical CPUs) on the same global batch give the same
weights; a run with the classic bug (replica losses not divided by the replica count) does not."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(shapes_dir, workdir, clip_norm, precision="float32"):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "engine", "_replicas.py"), shapes_dir,
                          str(workdir), str(clip_norm), precision], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_mirrored_matches_one_device(shapes_dir, tmp_path):
    r = _run(shapes_dir, tmp_path, 0.0)
    assert r["replicas_agree"]
    assert r["change"] > 1e-3                        # training moved the weights
    assert r["one_vs_two"] < 1e-6 * max(1.0, r["change"] * 1e3)
    assert r["one_vs_buggy"] > 0.1 * r["change"]     # the negative control is caught


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_mirrored_matches_one_device_with_clipping(shapes_dir, tmp_path):
    # clip_norm 0.01 is far below the gradient norm: every update is clipped, on the all-reduced gradient
    r = _run(shapes_dir, tmp_path, 0.01)
    assert r["replicas_agree"]
    assert r["change"] > 1e-5
    assert r["one_vs_two"] < 1e-3 * r["change"]


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_mirrored_matches_one_device_mixed_float16(shapes_dir, tmp_path):
    # dynamic loss scaling: the finite check and the update see the all-reduced gradient on every replica
    r = _run(shapes_dir, tmp_path, 0.0, "mixed_float16")
    assert r["replicas_agree"]
    assert r["change"] > 1e-3
    assert r["one_vs_two"] < 1e-2 * r["change"]
    assert r["one_vs_buggy"] > 0.1 * r["change"]
