"""Pure TF functions without variables, and the public custom-op functions.

Each custom op has a fused implementation (C++/CUDA, `_tfdet_ops.so`) and a composite twin built
from stock TF ops; `impl=None` picks the fused one when the library is loaded (see loader.py).
Importing this package loads the library and logs one line saying which path is active.
"""

import logging as _logging

from tfdet.ops import loader
from tfdet.ops.carafe import carafe
from tfdet.ops.deform_conv import deform_conv2d
from tfdet.ops.deform_roi_pool import deform_roi_pool
from tfdet.ops.roi_align import fpn_levels, roi_align

_logger = _logging.getLogger("tfdet")
if not _logger.handlers:  # one line on import; silence with logging.getLogger("tfdet").setLevel(...)
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("%(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(_logging.INFO)
    _logger.propagate = False

library_status = loader.library_status
library_status()

__all__ = ["carafe", "deform_conv2d", "deform_roi_pool", "fpn_levels", "library_status", "loader", "roi_align"]
