"""bin/train.py as a user meets it: every failure is one line `train.py: error: ...` and exit status 1
(bad values, unusable folders or checkpoints, data problems), checked before step 1 where it can be;
Ctrl-C / SIGTERM save a checkpoint of the last step and exit 130 / 143 (kill -9 and resume:
tests/engine/test_cli.py)."""

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "tests/engine/tiny_config.py"


def command(workdir, *args, config=CONFIG):
    return [sys.executable, "bin/train.py", f"--config={config}", f"--workdir={workdir}", *args]


def env(shapes_dir):
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", TFDET_TEST_SHAPES_DIR=shapes_dir)


def train(shapes_dir, workdir, *args, config=CONFIG, prefix=()):
    return subprocess.run([*prefix, *command(workdir, *args, config=config)], cwd=ROOT, env=env(shapes_dir),
                          capture_output=True, text=True, timeout=600)


def error_line(out, status=1):
    """The one error line of a finished run (asserting the exit status, a single line, no traceback)."""
    lines = [line for line in out.stderr.splitlines() if line.startswith("train.py:")]
    assert out.returncode == status and len(lines) == 1, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return lines[0]


def steps(workdir):
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths) if state else []


@pytest.mark.parametrize("override,message", [
    ("total_steps=-5", r"config\.train\.total_steps must be an integer >= 0 .*got -5\."),
    pytest.param("batch_size=0", r"config\.train\.batch_size must be an integer >= 1, got 0\.",
                 marks=pytest.mark.slow),  # each value: tests/engine/test_preflight.py
    pytest.param("batch_size=-4", r"config\.train\.batch_size must be an integer >= 1, got -4\.",
                 marks=pytest.mark.slow),
])
def test_bad_train_values(shapes_dir, tmp_path, override, message):
    out = train(shapes_dir, tmp_path / "w", f"--config.train.{override}")
    assert re.fullmatch(rf"train\.py: error: {message}", error_line(out))
    assert not os.path.exists(tmp_path / "w")  # refused before anything was written


def test_workdir_that_is_a_file(shapes_dir, tmp_path):
    (tmp_path / "w").write_text("")
    out = train(shapes_dir, tmp_path / "w")
    assert f"{tmp_path / 'w'} is a file, not a folder" in error_line(out)


def _without_root_powers():
    """A command prefix that makes root obey file permissions (root writes into read-only folders)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only for root")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.parametrize("readonly", ["workdir", "checkpoints"])
def test_read_only_folders_are_found_before_step_1(shapes_dir, tmp_path, readonly):
    workdir = tmp_path / "w"
    (workdir / "checkpoints").mkdir(parents=True)
    target = workdir if readonly == "workdir" else workdir / "checkpoints"
    target.chmod(0o555)
    try:
        out = train(shapes_dir, workdir, prefix=_without_root_powers())
    finally:
        target.chmod(0o755)
    assert re.fullmatch(rf"train\.py: error: cannot write in {re.escape(str(target))} \(.*\); make it writable or "
                        r"give --workdir another folder\.", error_line(out))
    assert "Epoch" not in out.stdout and not steps(workdir)


def test_no_readable_checkpoint(shapes_dir, tmp_path):
    ckpts = tmp_path / "w" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "ckpt-4.index").write_bytes(b"garbage")
    (ckpts / "ckpt-4.data-00000-of-00001").write_bytes(b"garbage")
    out = train(shapes_dir, tmp_path / "w")
    assert re.fullmatch(rf"train\.py: error: no readable checkpoint in {re.escape(str(ckpts))} \(ckpt-4: .*\)\. To "
                        r"start over, move .* away \(or train into another --workdir\).*", error_line(out))
    assert sorted(os.listdir(ckpts)) == ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]


@pytest.mark.slow
def test_data_problems_are_one_line(shapes_dir, tmp_path):
    # max_instances=0 (tfdet.data's check, or the first step's failure without it): one line, no traceback
    error_line(train(shapes_dir, tmp_path / "w", "--config.data.max_instances=0", "--config.train.total_steps=1"))


@pytest.mark.slow
def test_annotations_and_images_that_cannot_be_used_are_one_line(shapes_dir, tmp_path):
    import json

    images = os.path.join(shapes_dir, "train", "images")
    ann_path = os.path.join(shapes_dir, "annotations", "instances_train.json")
    ann = json.loads(open(ann_path).read())
    for a in ann["annotations"]:
        del a["id"]
    (tmp_path / "noid.json").write_text(json.dumps(ann))
    config = tmp_path / "coco.py"  # arg: "annotations json,image folder"
    config.write_text("from tests.engine import tiny_config\n\n\n"
                      "def get_config(arg):\n"
                      "    c = tiny_config.get_config()\n"
                      "    ann, images = arg.split(',')\n"
                      "    c.data.update(source='coco', train_ann=ann, train_images=images)\n"
                      "    c.train.total_steps = 1\n"
                      "    return c\n")
    for name, (ann_file, folder), named in [("missing_json", (tmp_path / "missing.json", images), "missing.json"),
                                            ("missing_folder", (ann_path, tmp_path / "nope"), str(tmp_path / "nope"))]:
        line = error_line(train(shapes_dir, tmp_path / name, config=f"{config}:{ann_file},{folder}"))
        assert named in line, line  # names the file or folder
    # Annotations without ids are usable: tfdet.data numbers them and says so (not an error).
    run = train(shapes_dir, tmp_path / "no_ids", config=f"{config}:{tmp_path / 'noid.json'},{images}")
    assert run.returncode == 0 and "renumbered annotations" in run.stdout + run.stderr, run.stderr[-2000:]


def _stop_with(signum, shapes_dir, workdir, after_step=3):
    """Starts a long run, sends `signum` once step `after_step` is logged; returns (run, stdout)."""
    proc = subprocess.Popen(command(workdir, "--verbose=2", "--config.train.total_steps=100000",
                                    "--config.train.checkpoint_every=1000", "--config.train.log_every=1"),
                            cwd=ROOT, env=env(shapes_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"step {after_step}/"):
                proc.send_signal(signum)
                break
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + stdout, stderr)


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143),
                                           pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_a_signal_saves_a_checkpoint_and_stops(shapes_dir, tmp_path, signum, status):
    workdir = str(tmp_path / "w")
    out = _stop_with(signum, shapes_dir, workdir)
    name = signal.Signals(signum).name
    match = re.fullmatch(rf"train\.py: error: stopped by {name} at step (\d+); saved (\S+)\. Run the same command "
                         r"again to resume from it\.", error_line(out, status))
    assert match, out.stderr[-2000:]
    step = int(match.group(1))
    assert step >= 3 and match.group(2) == os.path.join(workdir, "checkpoints", f"ckpt-{step}")
    assert steps(workdir) == [step]  # checkpoint_every=1000: only the one written on the signal
    assert f"{name} received: saving a checkpoint after the current step" in out.stdout
