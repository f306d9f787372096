"""Finds, checks and loads the compiled op library (`_tfdet_ops.so`), lazily and once.

The library is ABI-bound to the exact TensorFlow it was compiled against, so loading it under another
TensorFlow can crash the process. Every build (pip or Bazel) therefore writes a sidecar
`_tfdet_ops.so.json` with the TensorFlow version; the loader reads it *before* calling
`tf.load_op_library` and falls back to the composite (stock-TF) implementations when it does not match.

Environment:
  TFDET_OPS=composite        never load the library; every op uses its composite twin.
  TFDET_OPS=fused            the library must load; failing to load it is an error.
  TFDET_OPS_LIBRARY=/p/x.so  load this library instead of the packaged one (e.g. a Bazel build).
"""

import dataclasses
import json
import logging
import os
import threading

import tensorflow as tf

LIBRARY_NAME = "_tfdet_ops.so"
REBUILD_COMMAND = "pip install --no-build-isolation -e .  (in the tfdet checkout, with the TensorFlow you run)"

logger = logging.getLogger("tfdet")


@dataclasses.dataclass(frozen=True)
class LibraryStatus:
    """What the loader found. `module` is the loaded op module, or None (composite only)."""

    module: object
    path: str
    build_info: dict
    reason: str

    @property
    def loaded(self) -> bool:
        return self.module is not None

    @property
    def has_cuda(self) -> bool:
        return bool(self.build_info.get("cuda"))

    def describe(self) -> str:
        if not self.loaded:
            return f"tfdet: fused ops NOT loaded ({self.reason}); using composite stock-TF ops"
        kernels = "CPU+CUDA" if self.has_cuda else "CPU"
        return (
            f"tfdet: fused ops loaded from {self.path} "
            f"(built for TF {self.build_info.get('tf_version')}, {kernels} kernels, "
            f"by {self.build_info.get('builder', '?')})"
        )


class FusedOpsUnavailableError(RuntimeError):
    """impl='fused' (or TFDET_OPS=fused) was requested but the op library is not loaded."""


_lock = threading.Lock()
_status = None


def _default_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)


def read_build_info(path: str) -> dict:
    """Reads the sidecar json of a library; {} when it is missing or unreadable."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _load() -> LibraryStatus:
    mode = os.environ.get("TFDET_OPS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "fused", "composite"):
        raise ValueError(f"TFDET_OPS={mode!r} is not one of 'auto', 'fused', 'composite'.")
    path = os.environ.get("TFDET_OPS_LIBRARY") or _default_path()
    if mode == "composite":
        return LibraryStatus(None, path, {}, "TFDET_OPS=composite")
    if not os.path.exists(path):
        return LibraryStatus(None, path, {}, f"{path} does not exist; build it with: {REBUILD_COMMAND}")
    info = read_build_info(path)
    built_for = info.get("tf_version")
    if built_for != tf.__version__:
        found = f"TF {built_for}" if built_for else "an unknown TF (no build info next to it)"
        return LibraryStatus(
            None, path, info,
            f"{path} was built for {found} but TF {tf.__version__} is running; rebuild with: {REBUILD_COMMAND}",
        )
    try:
        module = tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:  # undefined symbols, wrong ABI, bad file
        return LibraryStatus(None, path, info, f"loading {path} failed ({e}); rebuild with: {REBUILD_COMMAND}")
    return LibraryStatus(module, path, info, "loaded")


def library_status() -> LibraryStatus:
    """Loads the library on first call; later calls return the same status. Raises
    FusedOpsUnavailableError while TFDET_OPS=fused and the library is not loaded."""
    global _status
    with _lock:
        if _status is None:
            _status = _load()
            if _status.loaded:
                logger.info(_status.describe())
            else:
                level = logging.INFO if "TFDET_OPS=composite" in _status.reason else logging.WARNING
                logger.log(level, _status.describe())
    if not _status.loaded and os.environ.get("TFDET_OPS", "").strip().lower() == "fused":
        raise FusedOpsUnavailableError(_status.describe())  # every time: no silent composite fallback
    return _status


def ops_module():
    """The loaded op module, or raises FusedOpsUnavailableError saying why it is missing."""
    status = library_status()
    if not status.loaded:
        raise FusedOpsUnavailableError(status.describe())
    return status.module


def resolve_impl(impl) -> str:
    """Maps impl=None|'fused'|'composite' to the implementation to run (docs/design.md, "Two implementations per op")."""
    if impl is None:
        return "fused" if library_status().loaded else "composite"
    if impl not in ("fused", "composite"):
        raise ValueError(f"impl must be None, 'fused' or 'composite', got {impl!r}.")
    if impl == "fused":
        ops_module()  # raises with the reason when the library is not there
    return impl
