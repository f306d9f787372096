"""fit() driver on one device: checkpoints, exact resume (step, LR, optimizer slots, data position),
NaN handling that keeps the last good checkpoint, config validation."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfdet.engine import callbacks, train
from tfdet.modeling.detectors import build_detector


def weights(model):
    return [np.asarray(v) for v in model.trainable_variables]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def checkpoint_steps(workdir):
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths) if state else []


@pytest.mark.slow
@pytest.mark.cpu_kernels
def test_resume_reproduces_an_uninterrupted_run(tiny, tmp_path):
    config = tiny()
    straight = train.train(config, str(tmp_path / "straight"), verbose=0)
    assert int(straight.optimizer.iterations.numpy()) == 6
    assert checkpoint_steps(tmp_path / "straight") == [2, 4, 6]

    first = tiny()
    first.train.total_steps = 3
    part = train.train(first, str(tmp_path / "resumed"), verbose=0)
    assert checkpoint_steps(tmp_path / "resumed") == [2, 3]
    assert max_diff(weights(part), weights(straight)) > 1e-4  # 3 steps are not 6
    resumed = train.train(config, str(tmp_path / "resumed"), verbose=0)
    assert int(resumed.optimizer.iterations.numpy()) == 6
    assert checkpoint_steps(tmp_path / "resumed") == [2, 3, 4, 6]
    # same steps, learning rates, momentum and batches: the same weights
    assert max_diff(weights(resumed), weights(straight)) < 1e-6

    # negative control: resuming at another data position ("reseed") gives other weights
    reseeded = tiny()
    reseeded.data.resume = "reseed"
    train.train(first, str(tmp_path / "reseed"), verbose=0)
    other = train.train(reseeded, str(tmp_path / "reseed"), verbose=0)
    assert max_diff(weights(other), weights(straight)) > 1e-5


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    workdir = str(tmp_path / "nan")
    with pytest.raises(callbacks.NonFiniteLossError, match=r"non-finite loss at step 4.*ckpt-2"):
        train.train(tiny("nan"), workdir, verbose=0)  # the loss is NaN from the 4th update (iteration 3) on
    assert checkpoint_steps(workdir) == [2]
    path = os.path.join(workdir, "checkpoints", "ckpt-2")
    reader = tf.train.load_checkpoint(path)
    values = [reader.get_tensor(n) for n, shape in tf.train.list_variables(path)
              if n.endswith("VARIABLE_VALUE") and len(shape) == 4]  # conv kernels
    assert len(values) >= 4
    assert all(np.all(np.isfinite(v)) for v in values)


def test_checkpoint_refuses_non_finite_weights(tiny, tmp_path):
    model = build_detector(tiny().model)
    ckpt = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), 3)
    step = tf.Variable(2, dtype=tf.int64)
    saver = callbacks.CheckpointEvery(manager, step, every=2)
    saver.set_model(model)
    saver.save()
    model.trainable_variables[0].assign(tf.fill(model.trainable_variables[0].shape, np.nan))
    step.assign(4)
    with pytest.raises(callbacks.NonFiniteLossError, match="not finite"):
        saver.save()
    assert manager.latest_checkpoint.endswith("ckpt-2")


@pytest.mark.parametrize("block,field", [("train", "base_lrr"), ("data", "scales")])
def test_unknown_config_fields_are_refused(tiny, tmp_path, block, field):
    config = tiny()
    config[block][field] = 1
    with pytest.raises(ValueError, match=f"config.{block}: unknown field.*{field}"):
        train.train(config, str(tmp_path), verbose=0)


def test_unknown_model_type_is_refused(tiny, tmp_path):
    config = tiny()
    config.model.type = "NoSuchDetector"
    with pytest.raises(ValueError, match="unknown detector 'NoSuchDetector'"):
        train.train(config, str(tmp_path), verbose=0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(tiny, tmp_path, policy):
    import keras

    config = tiny()
    config.train.update(total_steps=3, clip_norm=1.0)  # exercises clipping of loss-scaled gradients
    model = train.train(config, str(tmp_path / policy), mixed_precision=policy, verbose=0)  # the Trainer
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    assert model.detector.convs[0].compute_dtype == policy.split("_")[1]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    assert int(model.optimizer.iterations.numpy()) == 3
    assert callbacks.all_finite(model.trainable_variables)
    assert checkpoint_steps(tmp_path / policy) == [2, 3]


def test_tensorboard_summaries(tiny, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional dependency of the engine")
    import glob

    config = tiny()
    config.train.total_steps = 2
    train.train(config, str(tmp_path), verbose=0)
    tags = set()
    for path in glob.glob(str(tmp_path / "tensorboard" / "train" / "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"batch_loss", "batch_rpn_cls", "batch_lr", "epoch_loss"} <= tags


def test_step_lines_with_eta(tiny, tmp_path, capsys):
    config = tiny()
    config.train.update(total_steps=4, log_every=2)
    train.train(config, str(tmp_path), verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert all("rpn_cls" in line and " lr " in line and "ETA" in line for line in lines)


def test_checkpoints_hold_every_weight(tiny, tmp_path):
    # TinyRPN keeps its convs in a Python list, which tf.train.Checkpoint(model=...) alone does not see
    from tfdet.engine import checkpoint

    config = tiny()
    config.train.total_steps = 2
    trained = train.train(config, str(tmp_path), verbose=0)
    fresh = build_detector(config.model)
    assert max_diff(weights(fresh), weights(trained)) > 1e-4
    path = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert checkpoint.restore_weights(fresh, path).endswith("ckpt-2")
    assert max_diff(weights(fresh), weights(trained)) == 0.0


def test_category_count_is_checked_against_num_classes(shapes_dir, tmp_path):
    """A model whose class heads have fewer classes than the data has categories is refused before the
    model is built (on GPU an out-of-range class index would not even fail)."""
    from configs import faster_rcnn
    from tests.engine import tiny_config

    config = faster_rcnn.get_config("tiny")
    config.data.update(root=shapes_dir, shapes=tiny_config.SHAPES)
    config.model.num_classes = 5
    with pytest.raises(ValueError, match=r"the data has 3 categories .* config.model.num_classes is 5"):
        train.train(config, str(tmp_path), verbose=0)


def test_init_checkpoint_starts_a_new_run_and_is_saved_as_step_0(tiny, tmp_path):
    """train.init_checkpoint (e.g. bin/convert.py's output) gives the first weights of a run whose workdir has
    no checkpoint, saved as its step 0; a resumed run reads its own checkpoints instead."""
    config = tiny()
    config.train.total_steps = 2
    source = train.train(config, str(tmp_path / "source"), verbose=0)
    tuned = tiny()
    tuned.train.update(total_steps=2, init_checkpoint=str(tmp_path / "source" / "checkpoints"))
    train.train(tuned, str(tmp_path / "tuned"), verbose=0)
    assert checkpoint_steps(tmp_path / "tuned") == [0, 2]
    from tfdet.engine import checkpoint

    start = build_detector(tuned.model)
    checkpoint.restore_weights(start, str(tmp_path / "tuned" / "checkpoints" / "ckpt-0"))
    assert max_diff(weights(start), weights(source)) == 0.0
    tuned.train.update(total_steps=3, init_checkpoint=str(tmp_path / "missing"))
    train.train(tuned, str(tmp_path / "tuned"), verbose=0)  # resumes from its step 2: the init is not read
    assert checkpoint_steps(tmp_path / "tuned") == [0, 2, 3]
    with pytest.raises(FileNotFoundError, match="missing"):  # a new run needs it
        train.train(tuned, str(tmp_path / "new"), verbose=0)
    bad = tiny()
    bad.train.init_checkpoint = 3
    with pytest.raises(ValueError, match="config.train.init_checkpoint must be a checkpoint path"):
        train.train(bad, str(tmp_path / "bad"), verbose=0)
