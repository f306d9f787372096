"""bin/export.py's failures: one line `export.py: error: ...` naming the input at fault, exit status 2 for
bad flags and 1 otherwise, no traceback, and nothing written into the export folder."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "mask_rcnn.py") + ":tiny"  # 3 classes


def export(tmp_path, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "export.py"), f"--config={CONFIG}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "out" / "1").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "one.json").write_text('{"categories": [{"id": 1, "name": "a"}]}')
    (tmp_path / "ckpt-5.index").write_bytes(b"")
    return tmp_path


CASES = [
    ("version_exists", ["--export_dir=out", "--version=1"], 1,
     r"out/1 exists; pick another --version \(TF Serving versions are immutable\) or leave --version out .*"),
    ("export_dir_is_a_file", ["--export_dir=afile/model"], 1,
     r".*/afile is a file, not a folder, so afile/model cannot be created; give --export_dir a folder path\."),
    ("negative_version", ["--export_dir=new", "--version=-1"], 2, r"flag --version=-1: --version must be >= 0 .*"),
    ("bad_json", ["--export_dir=new", "--annotations=bad.json"], 1,
     r"--annotations bad\.json is not a COCO annotations json .*\(JSONDecodeError: .*\)\."),
    ("wrong_category_count", ["--export_dir=new", "--category_ids=1,2"], 2,
     r"--category_ids has 2 ids but the model \(config\.model\.num_classes\) has 3 classes: give one id per class\."),
    ("json_category_count", ["--export_dir=new", "--annotations=one.json"], 1,
     r"--annotations one\.json has 1 categories but the model .* has 3 classes; .*"),
    ("missing_json", ["--export_dir=new", "--annotations=nope.json"], 1,
     r"cannot read --annotations nope\.json \(No such file or directory\)\."),
    ("unknown_input_type", ["--export_dir=new", "--input_type=jpeg"], 2,
     r"--input_type must be one or more of image_tensor,encoded_image, got jpeg\."),
    ("empty_checkpoint_folder", ["--export_dir=new", "--checkpoint=empty"], 1, r"no checkpoint in empty .*"),
    ("missing_checkpoint", ["--export_dir=new", "--checkpoint=nope"], 1, r"checkpoint not found: nope"),
    ("damaged_checkpoint", ["--export_dir=new", "--checkpoint=ckpt-5"], 1,
     r"cannot read the checkpoint ckpt-5 \(.*\); give an intact one .*"),
]
FAST = {"version_exists", "export_dir_is_a_file", "negative_version", "bad_json"}


@pytest.mark.parametrize("args,status,message", [
    pytest.param(args, status, message, id=name, marks=() if name in FAST else pytest.mark.slow)
    for name, args, status, message in CASES])
def test_one_line_errors(files, args, status, message):
    before = sorted(os.listdir(files)), sorted(os.listdir(files / "out"))
    out = export(files, *args)
    lines = [line for line in out.stderr.splitlines() if line.startswith("export.py:")]
    assert out.returncode == status and len(lines) == 1, out.stderr[-3000:]
    assert re.fullmatch(rf"export\.py: error: {message}", lines[0]), lines[0]
    assert "Traceback" not in out.stderr
    assert (sorted(os.listdir(files)), sorted(os.listdir(files / "out"))) == before  # nothing written
