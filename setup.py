"""pip install (editable or not) of tfdet: compiles the custom ops into tfdet/ops/_tfdet_ops.so.

The ops are ABI-bound to the TensorFlow they are compiled against, so build inside the environment
that will run them, without build isolation:

    pip install --no-build-isolation -e .      # or without -e

g++ always; nvcc too when it is on PATH (or $NVCC) and TensorFlow is built with CUDA. TFDET_CUDA=off
skips CUDA, TFDET_CUDA=on requires it.
"""

import os
import shutil
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_ops"))
import build as op_build  # noqa: E402  (custom_ops/build.py)


class BuildOps(build_ext):
    """Builds the one op library with custom_ops/build.py instead of setuptools' compiler."""

    def get_ext_filename(self, ext_name):
        return os.path.join(*ext_name.split(".")) + ".so"

    def build_extension(self, ext):
        output = self.get_ext_fullpath(ext.name)
        try:
            op_build.build(output, cuda=os.environ.get("TFDET_CUDA", "auto"))
        except op_build.BuildError as e:
            sys.exit(f"tfdet: building the custom ops failed.\n{e}")
        if self.inplace or getattr(self, "editable_mode", False):
            # Editable install: setuptools copies the .so into the source tree, but not its sidecar.
            source_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), self.get_ext_filename(ext.name))
            if os.path.abspath(output) != source_tree:
                shutil.copyfile(output + ".json", source_tree + ".json")


setup(
    name="tfdet",
    version="0.1.0",
    description="Object detection and instance segmentation for TensorFlow 2 / Keras 3 with fused C++/CUDA ops",
    packages=find_packages(include=["tfdet", "tfdet.*"]),
    python_requires=">=3.9",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy",
        "absl-py",
        "pycocotools",
        "ml-collections",
    ],
    extras_require={"test": ["pytest"]},
    ext_modules=[Extension("tfdet.ops._tfdet_ops", sources=[])],
    cmdclass={"build_ext": BuildOps},
    zip_safe=False,
)
