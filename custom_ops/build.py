"""Compiles every op under custom_ops/ into one shared library, with g++ and (optionally) nvcc.

Used by setup.py (pip install, editable or not) and runnable by hand:

    python custom_ops/build.py --output tfdet/ops/_tfdet_ops.so [--cuda auto|on|off]

Sources: `custom_ops/<op>/*.cc` (g++) and `custom_ops/<op>/*.cu.cc` (nvcc, only with CUDA). Flags come
from `tf.sysconfig` of the TensorFlow in this interpreter; the library is bound to that exact version,
which is written to `<output>.json` beside it (the loader refuses a library built for another TF).
Objects are cached under build/ops/ and recompiled only when a source, a header or the flags change.
"""

import argparse
import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS_DIR = os.path.join(ROOT, "custom_ops")
CUDA_ARCHS = ("80", "90")  # A100, H100/H200; override with TFDET_CUDA_ARCHS=70,80,90


class BuildError(RuntimeError):
    pass


def tf_flags():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise BuildError(
            "Building the tfdet ops needs TensorFlow installed in this interpreter "
            f"({sys.executable}): {e}. Install tensorflow first, then build with "
            "`pip install --no-build-isolation -e .`."
        ) from e
    return tf.__version__, tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), tf.test.is_built_with_cuda()


def cuda_home(nvcc):
    """The toolkit root as nvcc itself reports it (the nvcc on PATH may be a wrapper script)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True).stderr
    out += subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True).stderr
    m = re.search(r"TOP=(\S+)", out)
    return os.path.normpath(m.group(1)) if m else os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def sources():
    cc, cu = [], []
    for path in sorted(glob.glob(os.path.join(OPS_DIR, "*", "*.cc"))):
        (cu if path.endswith(".cu.cc") else cc).append(path)
    if not cc:
        raise BuildError(f"no op sources found under {OPS_DIR}")
    return cc, cu


def newest_header_mtime():
    headers = glob.glob(os.path.join(OPS_DIR, "**", "*.h"), recursive=True)
    headers += glob.glob(os.path.join(OPS_DIR, "**", "*.cuh"), recursive=True)
    return max((os.path.getmtime(h) for h in headers), default=0.0)


def run(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def cuda_shim(home, build_dir):
    """TF headers include third_party/gpus/cuda/include/*.h, which the wheels lack or ship for another
    CUDA; a folder placed first on -I points that path at the toolkit's own headers."""
    shim = os.path.join(build_dir, "cuda_shim", "third_party", "gpus", "cuda")
    os.makedirs(shim, exist_ok=True)
    link = os.path.join(shim, "include")
    target = os.path.join(home, "include")
    if os.path.islink(link) and os.readlink(link) != target:
        os.remove(link)
    if not os.path.exists(link):
        os.symlink(target, link)
    return os.path.join(build_dir, "cuda_shim")


def build(output, cuda="auto", build_dir=None, verbose=True):
    tf_version, cflags, lflags, tf_has_cuda = tf_flags()
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if cuda == "on" and not (nvcc and tf_has_cuda):
        raise BuildError(f"--cuda on, but nvcc={nvcc!r} and TensorFlow built with CUDA={tf_has_cuda}")
    use_cuda = cuda != "off" and bool(nvcc) and tf_has_cuda
    cc_srcs, cu_srcs = sources()
    common = ["-std=c++17", "-O3", "-DNDEBUG", "-fPIC", f"-I{ROOT}"] + [f for f in cflags if f != "--std=c++17"]
    if use_cuda:
        common.append("-DGOOGLE_CUDA=1")
    key = hashlib.sha1(json.dumps([tf_version, common, use_cuda, CUDA_ARCHS]).encode()).hexdigest()[:10]
    build_dir = build_dir or os.path.join(ROOT, "build", "ops", key)
    os.makedirs(build_dir, exist_ok=True)
    header_time = newest_header_mtime()

    jobs = []  # (source, object, command)
    for src in cc_srcs:
        obj = os.path.join(build_dir, os.path.relpath(src, OPS_DIR).replace(os.sep, "__") + ".o")
        jobs.append((src, obj, ["g++", "-c", src, "-o", obj] + common))
    home = None
    if use_cuda:
        home = cuda_home(nvcc)
        archs = os.environ.get("TFDET_CUDA_ARCHS", ",".join(CUDA_ARCHS)).split(",")
        gencode = sum((["-gencode", f"arch=compute_{a},code=sm_{a}"] for a in archs), [])
        nv_flags = ["-std=c++17", "-O3", "-x", "cu", "-DGOOGLE_CUDA=1", "-DNDEBUG", "--expt-relaxed-constexpr",
                    "-Xcompiler", "-fPIC", f"-I{cuda_shim(home, build_dir)}", f"-I{ROOT}"]
        nv_flags += [f for f in cflags if f != "--std=c++17"] + gencode
        for src in cu_srcs:
            obj = os.path.join(build_dir, os.path.relpath(src, OPS_DIR).replace(os.sep, "__") + ".o")
            jobs.append((src, obj, [nvcc, "-c", src, "-o", obj] + nv_flags))

    stale = [j for j in jobs if not os.path.exists(j[1])
             or os.path.getmtime(j[1]) < max(os.path.getmtime(j[0]), header_time)]
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(run, cmd, f"compiling {os.path.relpath(src, ROOT)}") for src, _, cmd in stale]
        for f in futures:
            f.result()
    link = ["g++", "-shared", "-o", output + ".tmp"] + [obj for _, obj, _ in jobs] + lflags
    if use_cuda:
        link += [f"-L{os.path.join(home, 'lib64')}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    run(link, "linking the op library")
    os.replace(output + ".tmp", output)  # never leave a half-written library in place
    info = {"tf_version": tf_version, "cuda": use_cuda, "cuda_archs": list(CUDA_ARCHS) if use_cuda else [],
            "builder": "pip", "sources": [os.path.relpath(s, ROOT) for s, _, _ in jobs]}
    with open(output + ".json.tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(output + ".json.tmp", output + ".json")
    if verbose:
        print(f"tfdet: built {output} for TF {tf_version} ({'CPU+CUDA' if use_cuda else 'CPU'}; "
              f"{len(stale)}/{len(jobs)} objects compiled in {time.time() - start:.0f}s)", file=sys.stderr)
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "tfdet", "ops", "_tfdet_ops.so"))
    parser.add_argument("--cuda", choices=("auto", "on", "off"), default=os.environ.get("TFDET_CUDA", "auto"))
    args = parser.parse_args()
    try:
        build(args.output, args.cuda)
    except BuildError as e:
        sys.exit(f"tfdet op build: {e}")


if __name__ == "__main__":
    main()
