"""Helpers of the serving tests: a tfdet-free child process, tiny configs, training, sample images."""

import importlib
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATEGORY_IDS = [3, 7, 11]  # a dataset whose category ids are not 0..C-1

# Run in a child process: makes `import tfdet` (and anything under it) fail before running a script.
BLOCK_TFDET = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "tfdet" or name.startswith("tfdet."):
            raise ImportError(f"{name} is blocked in this process (stock TensorFlow only)")
        return None
sys.meta_path.insert(0, _Blocker())
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
"""


def run_isolated(script, *args):
    """Runs Python `script` text in a fresh process where importing tfdet raises ImportError."""
    code = f"import os\nROOT = {ROOT!r}\n" + BLOCK_TFDET + script
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def run_bin(name, *args):
    """Runs bin/<name> with `args` in a child process; returns the CompletedProcess (text output)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", name), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def tiny_config(family="mask_rcnn"):
    return importlib.import_module(f"configs.{family}").get_config("tiny")


def synthetic_batch(rng, with_masks=True):
    """Two 64x96 images with two bright boxes each, in the pipeline's layout."""
    images = rng.uniform(0, 50, (2, 64, 96, 3)).astype(np.float32)
    boxes = np.array([[[10, 8, 40, 40], [50, 20, 90, 60]]] * 2, np.float32)
    for b in range(2):
        for x1, y1, x2, y2 in boxes[b].astype(int):
            images[b, y1:y2, x1:x2] = 230
    masks = np.zeros((2, 2, 28, 28), np.uint8)
    masks[:, :, 4:24, 4:24] = 1
    return dict(images=tf.constant(images), image_info=tf.constant([[[64, 96], [1, 1], [64, 96]]] * 2, tf.float32),
                gt_boxes=tf.constant(boxes), gt_classes=tf.constant([[0, 2], [1, 2]], tf.int32),
                gt_masks=tf.constant(masks))


def train_few_steps(family, steps=3):
    """A tiny detector trained `steps` Adam steps on a synthetic batch; returns (model, losses)."""
    from tfdet.modeling.detectors import build_detector

    keras.utils.set_random_seed(3)
    config = tiny_config(family)
    config.model.ops_impl = "composite"
    from tfdet.engine import Trainer

    model = build_detector(config.model)
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(1e-3))
    batch = synthetic_batch(np.random.default_rng(0))
    losses = [float(trainer.train_step(batch)["loss"]) for _ in range(steps)]
    return model, losses


def sample_images(seed=1):
    """Three uint8 images of one size (60 x 90, so the resize is not the identity) with bright boxes."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 50, (3, 60, 90, 3))
    images[:, 8:38, 10:38] = 230
    images[:, 20:56, 48:85] = 230
    return images.astype(np.uint8)
