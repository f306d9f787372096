"""tfdet.engine.preflight: a `train` value that cannot work and a folder that cannot be written are
refused with one line naming them, before any data is read."""

import os

import pytest

from tfdet.engine import preflight, settings


def block(**values):
    return settings.ml_collections.ConfigDict({**settings.TRAIN_DEFAULTS, **values})


@pytest.mark.parametrize("field,value,must", [
    ("batch_size", 0, "an integer >= 1"), ("batch_size", -4, "an integer >= 1"), ("batch_size", 2.5, "an integer"),
    ("total_steps", -5, "an integer >= 0"), ("epochs", -1, "an integer >= 0"), ("steps_per_epoch", -1, "an integer"),
    ("warmup_steps", -1, "an integer >= 0"), ("checkpoint_every", -2, "an integer >= 0"),
    ("keep_checkpoints", 0, "an integer >= 1"), ("log_every", 0, "an integer >= 1"), ("seed", -1, "an integer >= 0"),
    ("seed", True, "an integer"), ("base_lr", 0.0, "a number > 0"), ("base_lr", float("nan"), "a number > 0"),
    ("base_lr", "fast", "a number > 0"), ("momentum", 1.0, r"a number in \[0, 1\)"), ("beta_2", -0.1, "a number in"),
    ("epsilon", 0.0, "a number > 0"), ("weight_decay", -1e-4, "a number >= 0"),
    ("warmup_ratio", 0.0, r"a number in \(0, 1\]"), ("decay_factor", 0.0, "a number > 0"),
    ("clip_norm", -1.0, "a number >= 0"),
])
def test_bad_values_are_named(field, value, must):
    with pytest.raises(ValueError, match=rf"^config\.train\.{field} must be {must}") as info:
        preflight.check_train_block(block(**{field: value}))
    assert str(info.value).endswith(f", got {value!r}.")


def test_good_values_pass():
    preflight.check_train_block(block())
    preflight.check_train_block(block(batch_size=1, total_steps=5, epochs=0, momentum=0.0, clip_norm=1.0))


def test_nothing_to_train():
    with pytest.raises(ValueError, match="epochs and total_steps are both 0"):
        preflight.check_train_block(block(epochs=0, total_steps=0))


def test_batch_size_must_split_across_replicas():
    preflight.check_batch_size(4, 2)
    with pytest.raises(ValueError, match="batch_size 3 must be a multiple of the 2 replicas"):
        preflight.check_batch_size(3, 2)


def test_writable_folders(tmp_path):
    folder = tmp_path / "a" / "b"
    preflight.check_writable(str(folder))
    assert folder.is_dir() and os.listdir(folder) == []  # created, and the probe file is gone
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder, so .*file/sub cannot be created; "
                                                 r"give --workdir a folder path\."):
        preflight.check_writable(str(tmp_path / "file" / "sub"))


def test_train_block_checks_values():
    """settings.train_block (used by the Trainer and train()) applies the checks."""
    with pytest.raises(ValueError, match=r"^config\.train\.batch_size must be an integer >= 1"):
        settings.train_block({"batch_size": 0})
    assert settings.train_block({"batch_size": 4}).batch_size == 4
