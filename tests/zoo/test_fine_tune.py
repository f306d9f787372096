"""Fine-tuning a converted model: bin/convert.py --num_classes writes a config whose train.init_checkpoint is
the converted checkpoint, so that bin/train.py starts from it (saved as the run's step 0: every weight
but the re-initialized class layers equals the converted one) and trains on other data; and --classes
keeps a subset of the source classes, named by COCO id or name, in the config's category ids / names."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io
from tests.zoo.test_convert_cli import fixture_npz, load_config
from tests.zoo.test_torchvision_models import fixture_state_dict
from tfdet.engine.checkpoint import restore, weights_by_path
from tfdet.modeling.detectors import build_detector
from tfdet.zoo import files
from tfdet.zoo import torchvision as tv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "fasterrcnn_resnet50_fpn"

# The converter's config, on two tiny shapes images (3 categories) seen again at every step.
WRAPPER = """
import importlib.util

SHAPES = dict(num_train=2, num_val=1, min_image_size=96, max_image_size=128, max_shapes=2, min_shape_size=24,
              max_shape_size=48)


def get_config(arg=None):
    spec = importlib.util.spec_from_file_location("converted", {converted!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data = dict(source="shapes", root={root!r}, shapes=SHAPES, scale=(128, 96), max_instances=4,
                       mask_size=0, with_keypoints=False, flip_prob=0.0, shuffle_buffer=2)
    config.train.update(batch_size=2, optimizer="sgd", base_lr=0.01, warmup_steps=0, total_steps=5,
                        steps_per_epoch=1, checkpoint_every=0, keep_checkpoints=10, log_every=1)
    return config
"""


def checkpoint_weights(path):
    """{weight path: array} of the by-path weights of an engine checkpoint."""
    reader = tf.train.load_checkpoint(path)
    return {name.split("/")[1].replace(".S", "/"): reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map() if name.startswith("weights/") and "OPTIMIZER" not in name}


@pytest.mark.slow
def test_train_starts_from_the_converted_checkpoint(tmp_path):
    converted = tmp_path / "converted"
    files.convert_torchvision(str(fixture_npz(tmp_path)), str(converted), num_classes=3)
    assert load_config(converted / "config.py").train.init_checkpoint == str(converted)
    config = tmp_path / "fine_tune.py"
    config.write_text(WRAPPER.format(converted=str(converted / "config.py"), root=str(tmp_path / "shapes")))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "train.py"), f"--config={config}",
                          f"--workdir={tmp_path / 'work'}", "--verbose=2"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"initialised from {converted}" in run.stdout, run.stdout[-2000:]
    losses = [float(v) for v in re.findall(r"^step \d+/5 .*?\bloss ([-\d.e+naif]+)", run.stdout, re.M)]
    assert len(losses) == 5 and np.isfinite(losses).all(), run.stdout[-2000:]
    assert losses[-1] < losses[0], losses
    meta, arrays = fixtures_io.load("torchvision", NAME)
    source = tv.convert(fixture_state_dict(meta, arrays), NAME, num_classes=3)  # the class layers left out
    step0 = checkpoint_weights(str(tmp_path / "work" / "checkpoints" / "ckpt-0"))
    assert set(step0) - set(source) == {"bbox_head/cls/kernel", "bbox_head/cls/bias", "bbox_head/reg/kernel",
                                        "bbox_head/reg/bias"}
    for path, value in source.items():
        np.testing.assert_array_equal(step0[path], value, err_msg=path)
    final = checkpoint_weights(str(tmp_path / "work" / "checkpoints" / "ckpt-5"))
    assert not np.array_equal(final["bbox_head/fc2/kernel"], source["bbox_head/fc2/kernel"])  # trained


def test_convert_keeps_the_chosen_classes(tmp_path):
    out = tmp_path / "two"
    files.convert_torchvision(str(fixture_npz(tmp_path)), str(out), classes=["car", "1"])
    config = load_config(out / "config.py")
    assert config.model.num_classes == 2 and list(config.data.category_ids) == [3, 1]
    assert list(config.data.class_names) == ["car", "person"]
    model = build_detector(config.model)
    restore(model, str(out))
    meta, arrays = fixtures_io.load("torchvision", NAME)
    full = tv.convert(fixture_state_dict(meta, arrays), NAME)
    weights = {k: v.numpy() for k, v in weights_by_path(model).items()}
    np.testing.assert_array_equal(weights["bbox_head/cls/kernel"], full["bbox_head/cls/kernel"][:, [2, 0, 90]])
    np.testing.assert_array_equal(weights["bbox_head/reg/kernel"],
                                  full["bbox_head/reg/kernel"][:, [8, 9, 10, 11, 0, 1, 2, 3]])
    np.testing.assert_array_equal(weights["fpn/lateral2/kernel"], full["fpn/lateral2/kernel"])
    with pytest.raises(ValueError, match="'unicorn' .*no class name"):
        files.convert_torchvision(str(fixture_npz(tmp_path)), str(tmp_path / "bad"), classes=["unicorn"])
    with pytest.raises(ValueError, match="not both"):
        files.convert_torchvision(str(fixture_npz(tmp_path)), str(tmp_path / "bad"), classes=["car"], num_classes=2)
    assert not (tmp_path / "bad").exists()
