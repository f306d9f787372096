"""Repository rule @local_tf: the installed TensorFlow's headers and library, and the CUDA toolkit.

Runs `$PYTHON_BIN_PATH` (default: python3) to ask TensorFlow where its headers and library are and
which flags it was built with, symlinks them into the repository, and writes:
  BUILD        cc_library :tf_headers (+ filegroup :tf_header_files for nvcc), :tf_framework
  defs.bzl     TF_VERSION, TF_COPTS, TF_LINKOPTS, CUDA_ENABLED, NVCC, CUDA_HOME
CUDA is enabled when TensorFlow is built with CUDA and nvcc is found ($NVCC or PATH), unless
TFDET_CUDA=off; TFDET_CUDA=on makes a missing toolkit an error.
Build with: bazel build //:tfdet_ops --repo_env=PYTHON_BIN_PATH=$PWD/.venv/bin/python
"""

_QUERY = """
import json, tensorflow as tf
print(json.dumps({
    "version": tf.__version__,
    "include": tf.sysconfig.get_include(),
    "lib": tf.sysconfig.get_lib(),
    "compile_flags": tf.sysconfig.get_compile_flags(),
    "link_flags": tf.sysconfig.get_link_flags(),
    "cuda": tf.test.is_built_with_cuda(),
}))
"""

def _fail(msg):
    fail("\n\ntfdet @local_tf: " + msg + "\n")

def _cuda_home(ctx, nvcc):
    if ctx.os.environ.get("CUDA_HOME"):
        return ctx.os.environ["CUDA_HOME"]
    result = ctx.execute([nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null"])
    for line in (result.stderr + result.stdout).splitlines():
        if "TOP=" in line:
            return line.split("TOP=")[1].strip()
    return str(ctx.path(nvcc).dirname.dirname)

def _tf_configure_impl(ctx):
    python = ctx.os.environ.get("PYTHON_BIN_PATH", "python3")
    result = ctx.execute([python, "-c", _QUERY], environment = {"TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.return_code != 0:
        _fail(("cannot import tensorflow with PYTHON_BIN_PATH=%s:\n%s\n" +
               "Point it at the Python that has TensorFlow, e.g. " +
               "--repo_env=PYTHON_BIN_PATH=$PWD/.venv/bin/python (run bin/setup_env first).") % (python, result.stderr))
    info = json.decode(result.stdout.strip().splitlines()[-1])
    ctx.symlink(info["include"], "include")
    ctx.symlink(info["lib"] + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")

    mode = ctx.os.environ.get("TFDET_CUDA", "auto")
    nvcc = ctx.os.environ.get("NVCC") or ctx.which("nvcc")
    cuda = mode != "off" and nvcc != None and info["cuda"]
    if mode == "on" and not cuda:
        _fail("TFDET_CUDA=on but nvcc=%s and TensorFlow built with CUDA=%s" % (nvcc, info["cuda"]))
    cuda_home = ""
    if cuda:
        cuda_home = _cuda_home(ctx, str(nvcc))

        # TF's headers include third_party/gpus/cuda/include/..., which the wheel lacks or ships for
        # another CUDA: point that path at the toolkit's headers, first on nvcc's -I.
        ctx.symlink(cuda_home + "/include", "cuda_shim/third_party/gpus/cuda/include")

    copts = [f for f in info["compile_flags"] if not f.startswith("-I") and f != "--std=c++17"]
    ctx.file("defs.bzl", "\n".join([
        "TF_VERSION = %r" % info["version"],
        "TF_COPTS = %r" % copts,
        "TF_LINKOPTS = %r" % ["-L" + info["lib"], "-l:libtensorflow_framework.so.2"],
        "CUDA_ENABLED = %r" % cuda,
        "NVCC = %r" % (str(nvcc) if cuda else ""),
        "CUDA_HOME = %r" % cuda_home,
        "",
    ]))
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "tf_headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

filegroup(
    name = "tf_header_files",
    srcs = glob(["include/**"]),
)

filegroup(
    name = "cuda_shim",
    srcs = glob(["cuda_shim/**"]),
)
""")

tf_configure = repository_rule(
    implementation = _tf_configure_impl,
    environ = ["PYTHON_BIN_PATH", "TFDET_CUDA", "NVCC", "CUDA_HOME"],
    local = True,
)
