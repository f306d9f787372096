"""The `train` config block: its defaults (the one place they live) and its check.

  batch_size     global batch (split across replicas)       base_lr, momentum, weight_decay, optimizer
  epochs         length of the run in epochs of the data    total_steps: overrides epochs when > 0
  steps_per_epoch  0 = images in the train split // batch_size
  warmup_steps, warmup_ratio, decay_epochs | decay_steps, decay_factor   (see tfdet.engine.optim)
  clip_norm      global-norm gradient clipping (0 = off)
  checkpoint_every  save every N steps (and at the end); keep_checkpoints: how many to keep
  log_every      TensorBoard update frequency in steps      seed: Keras / data seed
  init_checkpoint  a checkpoint (tfdet.engine.checkpoint.restore: file, prefix or folder, e.g. bin/convert.py's
                 output) whose weights start a run whose workdir has none; "" = the model's initializers
"""

import ml_collections

from tfdet.engine.preflight import check_train_block

TRAIN_DEFAULTS = dict(batch_size=2, optimizer="sgd", base_lr=0.02, momentum=0.9, weight_decay=1e-4, beta_1=0.9,
                      beta_2=0.999, epsilon=1e-8, epochs=12, total_steps=0, steps_per_epoch=0, warmup_steps=500,
                      warmup_ratio=0.001, decay_epochs=(8, 11), decay_steps=None, decay_factor=0.1, clip_norm=0.0,
                      checkpoint_every=500, keep_checkpoints=3, log_every=50, seed=0, init_checkpoint="")


def train_block(block):
    """A `train` block over TRAIN_DEFAULTS as a ConfigDict, refusing unknown keys (a typo must not be
    silently ignored) and values that cannot work (tfdet.engine.preflight.check_train_block)."""
    block = block or {}
    block = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    unknown = set(block) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"config.train: unknown field(s) {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}.")
    block = ml_collections.ConfigDict({**TRAIN_DEFAULTS, **block})
    check_train_block(block)
    return block
