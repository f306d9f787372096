"""The op library loader: version check, fallbacks and the TFDET_OPS switch."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from tfdet.ops import loader


def test_packaged_library_is_loaded_and_built_for_this_tf():
    status = loader.library_status()
    assert status.loaded, status.reason
    assert status.build_info["tf_version"] == tf.__version__
    assert loader.resolve_impl(None) == "fused"


def _fake_library(tmp_path, tf_version, content=None):
    path = tmp_path / "_tfdet_ops.so"
    if content is None:
        shutil.copyfile(loader.library_status().path, path)
    else:
        path.write_bytes(content)
    if tf_version is not None:
        (tmp_path / "_tfdet_ops.so.json").write_text(json.dumps({"tf_version": tf_version, "cuda": False}))
    return str(path)


def test_library_built_for_another_tf_is_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDET_OPS_LIBRARY", _fake_library(tmp_path, "2.15.0"))
    status = loader._load()
    assert not status.loaded
    assert "built for TF 2.15.0" in status.reason and tf.__version__ in status.reason
    assert "pip install --no-build-isolation" in status.reason  # the rebuild command


def test_library_without_build_info_is_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDET_OPS_LIBRARY", _fake_library(tmp_path, None))
    status = loader._load()
    assert not status.loaded and "unknown TF" in status.reason


def test_broken_library_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDET_OPS_LIBRARY", _fake_library(tmp_path, tf.__version__, content=b"not an ELF file"))
    status = loader._load()
    assert not status.loaded and "loading" in status.reason and "failed" in status.reason


def test_missing_library(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDET_OPS_LIBRARY", str(tmp_path / "nothing.so"))
    status = loader._load()
    assert not status.loaded and "does not exist" in status.reason


def test_composite_switch_and_bad_switch(monkeypatch):
    monkeypatch.setenv("TFDET_OPS", "composite")
    assert loader._load().reason == "TFDET_OPS=composite"
    monkeypatch.setenv("TFDET_OPS", "gpu")
    with pytest.raises(ValueError, match="TFDET_OPS"):
        loader._load()


def _python(code, **env):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_import_reports_the_fused_library():
    proc = _python("import tfdet.ops")
    assert proc.returncode == 0, proc.stderr
    assert "tfdet: fused ops loaded from" in proc.stderr


def test_mismatched_library_falls_back_to_composite_in_a_fresh_process(tmp_path):
    code = ("import tfdet.ops as o, tensorflow as tf; assert not o.library_status().loaded; "
            "print(o.roi_align(tf.ones([1, 4, 4, 1]), [[0., 0., 4., 4.]], [0], 2).numpy().sum())")
    proc = _python(code, TFDET_OPS_LIBRARY=_fake_library(tmp_path, "2.15.0"))
    assert proc.returncode == 0, proc.stderr
    assert "fused ops NOT loaded" in proc.stderr and "rebuild with" in proc.stderr
    assert float(proc.stdout.split()[-1]) == pytest.approx(4.0)


def test_composite_switch_in_a_fresh_process():
    code = ("import tfdet.ops as o\n"
            "assert o.loader.resolve_impl(None) == 'composite'\n"
            "try:\n    o.loader.resolve_impl('fused')\nexcept o.loader.FusedOpsUnavailableError as e:\n"
            "    print('refused:', e)\n")
    proc = _python(code, TFDET_OPS="composite")
    assert proc.returncode == 0, proc.stderr
    assert "refused: tfdet: fused ops NOT loaded (TFDET_OPS=composite)" in proc.stdout


def test_fused_switch_fails_loudly_when_library_is_unusable(tmp_path):
    proc = _python("import tfdet.ops", TFDET_OPS="fused", TFDET_OPS_LIBRARY=_fake_library(tmp_path, "2.15.0"))
    assert proc.returncode != 0
    assert "FusedOpsUnavailableError" in proc.stderr and "built for TF 2.15.0" in proc.stderr
