"""tfdet_op_library: one op folder's sources as a cc_library (custom_op_library-style macro).

CPU sources compile with the cc toolchain; `cuda_srcs` compile with nvcc through a genrule (Bazel 4's
cc rules cannot compile CUDA) when @local_tf found a CUDA toolkit. The libraries are alwayslink, so
linking them into the Python op library (//:tfdet_ops) or into tensorflow_model_server keeps every
kernel registration.
"""

load("@local_tf//:defs.bzl", "CUDA_ENABLED", "CUDA_HOME", "NVCC", "TF_COPTS")

CUDA_ARCHS = ["80", "90"]

TFDET_COPTS = ["-std=c++17", "-O3", "-DNDEBUG", "-fPIC"] + TF_COPTS + (["-DGOOGLE_CUDA=1"] if CUDA_ENABLED else [])

def _nvcc_object(name, src, hdrs):
    out = name + ".cu.o"
    gencode = " ".join(["-gencode arch=compute_%s,code=sm_%s" % (a, a) for a in CUDA_ARCHS])
    native.genrule(
        name = name,
        srcs = [src] + hdrs + [
            "//custom_ops/common:headers",
            "@local_tf//:tf_header_files",
            "@local_tf//:cuda_shim",
        ],
        outs = [out],
        cmd = " ".join([
            NVCC,
            "-c $(location %s) -o $@" % src,
            "-std=c++17 -O3 -x cu -DGOOGLE_CUDA=1 -DNDEBUG --expt-relaxed-constexpr -Xcompiler -fPIC",
            "-Iexternal/local_tf/cuda_shim -I. -Iexternal/local_tf/include",
            " ".join(TF_COPTS),
            gencode,
        ]),
        message = "nvcc " + src,
    )
    return out

def tfdet_op_library(name, srcs, hdrs = [], cuda_srcs = []):
    """cc_library `name` of one op: registration + CPU kernels (+ CUDA objects)."""
    objects = []
    if CUDA_ENABLED:
        for i, src in enumerate(cuda_srcs):
            objects.append(_nvcc_object("%s_cuda_%d" % (name, i), src, hdrs))
    native.cc_library(
        name = name,
        srcs = srcs + objects,
        hdrs = hdrs,
        copts = TFDET_COPTS,
        deps = ["//custom_ops/common:kernels", "//custom_ops/common:op_utils", "@local_tf//:tf_headers"],
        alwayslink = 1,
        visibility = ["//visibility:public"],
    )

def cuda_linkopts():
    """Static CUDA runtime: the library still loads where no CUDA is installed."""
    if not CUDA_ENABLED:
        return []
    return ["-L%s/lib64" % CUDA_HOME, "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
