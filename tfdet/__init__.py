"""tfdet: object detection and instance segmentation for TensorFlow 2 / Keras 3.

Importing tfdet selects the TensorFlow backend of Keras (docs/design.md, "Backend and layout"). Keras reads the
backend when it is first imported, so tfdet refuses to run under another backend rather than
silently mixing frameworks.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"tfdet needs the TensorFlow backend of Keras, but Keras is running on "
        f"'{keras.backend.backend()}'. Set KERAS_BACKEND=tensorflow before importing keras."
    )

__version__ = "0.1.0"
