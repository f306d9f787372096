"""Training engine: the one way detectors train. `Trainer` (the train step and the optimizer recipe, on
any tf.data input) and `tfdet.engine.train.train(config, workdir)` (the whole run behind bin/train.py:
strategy, input, checkpoints, callbacks), and their parts: settings (the `train` block), strategy,
optim, step, callbacks, checkpoint, data (the training input)."""

from tfdet.engine.trainer import Trainer

__all__ = ["Trainer"]
