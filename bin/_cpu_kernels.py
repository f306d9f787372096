"""Turns TensorFlow's oneDNN CPU kernels on for the bin/ commands unless the user chose
(TF_ENABLE_ONEDNN_OPTS already set, to 0 or 1). TensorFlow itself turns them on only on CPUs with
AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; elsewhere (older Intel and AMD CPUs) its plain kernels are
slower (README, "oneDNN"; benchmarks/onednn_bench.py). oneDNN changes float rounding, not results
beyond it. Must run before TensorFlow is imported, so it is TensorFlow-free and every bin/*.py imports it
first: `import _cpu_kernels  # noqa: F401`.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
