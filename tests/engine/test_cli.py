"""bin/train.py: flag handling (bad config path / field / value -> one clear line, exit status 2 or 1),
a run killed with SIGKILL resumes from its last checkpoint without losing completed steps (and ends with
the weights of an uninterrupted run), a NaN loss exits 1 with the last good checkpoint kept."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "tests/engine/tiny_config.py"


def _env(shapes_dir=None):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    if shapes_dir:
        env["TFDET_TEST_SHAPES_DIR"] = shapes_dir
    return env


def _train(args, shapes_dir=None, **kwargs):
    return subprocess.run([sys.executable, "bin/train.py", *args], cwd=ROOT, env=_env(shapes_dir),
                          capture_output=True, text=True, timeout=600, **kwargs)


def _steps(workdir):
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths) if state else []


@pytest.mark.parametrize("args,message", [
    (["--config=no/such/config.py"], r"cannot load the --config file.*no/such/config\.py"),
    ([f"--config={CONFIG}", "--config.train.base_lrr=0.1"],
     r"unknown config field .*base_lrr.*--config\.train\.base_lrr"),
    ([f"--config={CONFIG}", "--config.train.base_lr=fast"], r"--config\.train\.base_lr=fast.*could not convert"),
    ([f"--config={CONFIG}:bogus"], r"unknown variant 'bogus'"),
    ([f"--config={CONFIG}", "--strategy=everywhere"], r"--strategy=everywhere.*one_device"),
    ([f"--config={CONFIG}", "--workdir=/tmp/x", "extra"], r"unexpected arguments"),
])
def test_bad_flags_give_one_clear_line(args, message, tmp_path):
    if not any(a.startswith("--workdir") for a in args):
        args = [*args, f"--workdir={tmp_path}"]
    out = _train(args)
    assert out.returncode != 0
    assert re.search(message, out.stderr), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_unknown_field_in_the_config_file(tmp_path, shapes_dir):
    config = tmp_path / "typo.py"
    config.write_text("from tests.engine import tiny_config\n\n\ndef get_config():\n"
                      "    c = tiny_config.get_config()\n    c.train.momentom = 0.8\n    return c\n")
    out = _train([f"--config={config}", f"--workdir={tmp_path / 'w'}"], shapes_dir)
    assert out.returncode == 1
    assert re.search(r"config\.train: unknown field.*momentom", out.stderr), out.stderr[-2000:]


def _weights(path):
    reader = tf.train.load_checkpoint(path)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.startswith("weights/")}


@pytest.mark.slow
def test_killed_run_resumes_without_losing_completed_steps(tmp_path, shapes_dir):
    """kill -9 mid-run, rerun: training goes on from the last checkpoint and ends with the weights of an
    uninterrupted run, bit for bit (the `sampled` variant samples anchors at random)."""
    workdir = str(tmp_path / "run")
    args = [f"--config={CONFIG}:sampled", f"--workdir={workdir}", "--verbose=2", "--config.train.checkpoint_every=2"]
    proc = subprocess.Popen([sys.executable, "bin/train.py", *args, "--config.train.total_steps=100000"], cwd=ROOT,
                            env=_env(shapes_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not [s for s in _steps(workdir) if s >= 6]:
            assert proc.poll() is None, "training ended before it was killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = _steps(workdir)
    assert saved and saved[-1] >= 6, saved
    last = saved[-1]
    out = _train([*args, f"--config.train.total_steps={last + 3}"], shapes_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from {os.path.join(workdir, 'checkpoints', f'ckpt-{last}')} at step {last}" in out.stdout
    assert _steps(workdir)[-1] == last + 3
    assert re.search(rf"step {last + 3}/{last + 3}  loss [-0-9.e]+ .* lr [0-9.e-]+ .* s/step  ETA 0:00:00", out.stdout)
    straight = str(tmp_path / "straight")
    out = _train([*args, f"--workdir={straight}", f"--config.train.total_steps={last + 3}"], shapes_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed, uninterrupted = (_weights(os.path.join(w, "checkpoints", f"ckpt-{last + 3}")) for w in (workdir, straight))
    assert resumed.keys() == uninterrupted.keys() and len(resumed) >= 8
    assert all(np.array_equal(resumed[k], uninterrupted[k]) for k in resumed)
    at_kill = _weights(os.path.join(workdir, "checkpoints", f"ckpt-{last}"))
    assert any(not np.array_equal(resumed[k], at_kill[k]) for k in resumed)  # the steps after the kill trained


@pytest.mark.slow
def test_nan_loss_exits_with_the_last_good_checkpoint(tmp_path, shapes_dir):
    workdir = str(tmp_path / "nan")
    out = _train([f"--config={CONFIG}:nan", f"--workdir={workdir}", "--verbose=0"], shapes_dir)
    assert out.returncode == 1
    assert re.search(r"train.py: error: non-finite loss at step 4: .*rpn_cls.*ckpt-2", out.stderr), out.stderr[-2000:]
    assert _steps(workdir) == [2]
