"""CUDA kernels: compiled by nvcc in every run (so they cannot rot), run against the CPU results on a GPU.

Each tests/gpu/<op>_harness.cu builds with nvcc alone (no TensorFlow) from the framework-free kernel
headers. Without nvcc the compile tests skip; without a GPU the harness run skips (exit code 77).
"""

import glob
import os
import shutil
import subprocess

import pytest
import tensorflow as tf

from tfdet.ops import loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESSES = sorted(glob.glob(os.path.join(ROOT, "tests", "gpu", "*_harness.cu")))
NVCC = os.environ.get("NVCC") or shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Compiles every harness once; {name: binary path}."""
    out = tmp_path_factory.mktemp("gpu_harness")
    binaries = {}
    for source in HARNESSES:
        name = os.path.basename(source)[: -len(".cu")]
        binary = str(out / name)
        proc = subprocess.run(
            [NVCC, "-std=c++17", "-O2", f"-I{ROOT}", "-gencode", "arch=compute_80,code=sm_80",
             "-gencode", "arch=compute_90,code=sm_90", source, "-o", binary], capture_output=True, text=True)
        assert proc.returncode == 0, f"nvcc failed on {source}:\n{proc.stderr[-5000:]}"
        binaries[name] = binary
    return binaries


def test_every_op_with_cuda_kernels_has_a_harness():
    ops_with_cuda = {os.path.basename(os.path.dirname(p))
                     for p in glob.glob(os.path.join(ROOT, "custom_ops", "*", "*.cu.cc"))}
    harnessed = {os.path.basename(h)[: -len("_harness.cu")] for h in HARNESSES}
    assert ops_with_cuda and ops_with_cuda <= harnessed, f"no harness for {sorted(ops_with_cuda - harnessed)}"


@needs_nvcc
@pytest.mark.parametrize("source", HARNESSES, ids=os.path.basename)
def test_harness_runs_or_reports_no_gpu(built, source):
    binary = built[os.path.basename(source)[: -len(".cu")]]
    proc = subprocess.run([binary], capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip("no CUDA device on this machine: the harness compiled; run it on a GPU (tests/gpu/README.md)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ALL OK" in proc.stdout


@needs_nvcc
def test_op_library_has_cuda_kernels_when_nvcc_and_cuda_tf_are_present():
    """pip install compiled the TF GPU kernels too (a silent CPU-only build would hide CUDA rot)."""
    if not tf.test.is_built_with_cuda() or os.environ.get("TFDET_CUDA") == "off":
        pytest.skip("TensorFlow without CUDA, or TFDET_CUDA=off: the build compiles no CUDA")
    status = loader.library_status()
    assert status.loaded and status.has_cuda, status.build_info
