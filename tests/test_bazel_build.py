"""The Bazel front door builds the same op sources into a library that tfdet loads and runs.

Needs `bazel` (Debian's bazel-bootstrap, 4.2.3; bin/test installs it when it can). Without it the test
skips, unless TFDET_REQUIRE_BAZEL=1 (set by .ci/run) turns the skip into a failure.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bazel_library():
    bazel = shutil.which("bazel")
    if bazel is None:
        if os.environ.get("TFDET_REQUIRE_BAZEL") == "1":
            pytest.fail("bazel is not installed but TFDET_REQUIRE_BAZEL=1 (apt-get install bazel-bootstrap)")
        pytest.skip("bazel is not installed (apt-get install bazel-bootstrap)")
    proc = subprocess.run(
        [bazel, "build", "//:tfdet_ops", "//:tfdet_ops_kernels", f"--repo_env=PYTHON_BIN_PATH={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-8000:]
    bin_dir = subprocess.run([bazel, "info", "bazel-bin", f"--repo_env=PYTHON_BIN_PATH={sys.executable}"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(bin_dir, "_tfdet_ops.so")


def test_bazel_library_records_its_build(bazel_library):
    import tensorflow as tf

    with open(bazel_library + ".json", encoding="utf-8") as f:
        info = json.load(f)
    assert info["builder"] == "bazel" and info["tf_version"] == tf.__version__


def test_bazel_library_runs_roi_align(bazel_library):
    code = """
import numpy as np, tensorflow as tf
import tfdet.ops as ops
status = ops.library_status()
assert status.build_info["builder"] == "bazel", status
f = tf.random.stateless_normal([2, 9, 11, 4], seed=[1, 2])
boxes = tf.constant([[1., 2., 15., 12.], [-3., 0., 5., 30.], [4., 4., 4., 9.]])
idx = tf.constant([0, 1, 1])
with tf.GradientTape(persistent=True) as tape:
    tape.watch(f)
    fused = ops.roi_align(f, boxes, idx, 3, 0.5, impl="fused")
    composite = ops.roi_align(f, boxes, idx, 3, 0.5, impl="composite")
np.testing.assert_allclose(fused, composite, atol=1e-5)
np.testing.assert_allclose(tape.gradient(fused, f), tape.gradient(composite, f), atol=1e-5)
print("bazel library OK", status.path)
"""
    env = dict(os.environ, TFDET_OPS="fused", TFDET_OPS_LIBRARY=bazel_library, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "bazel library OK" in proc.stdout
