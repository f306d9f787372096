"""Trainer: the one way a tfdet detector trains, whichever door the user takes (`tfdet.engine.train`,
bin/train.py, or a Python script with its own tf.data input).

    trainer = Trainer(model, config.train, steps_per_epoch=len_of_an_epoch)
    trainer.fit(dataset, epochs=12)              # Keras' loop, callbacks, progress bar
    trainer.evaluate(val_dataset)                # validation losses

The Trainer is a keras.Model around the detector: its train step is tfdet.engine.step's (gradient of the
mean loss over the global batch under any tf.distribute strategy, global-norm clipping, torch-style L2
weight decay) and its optimizer is the `train` block's recipe (tfdet.engine.optim: SGD with linear
warmup and step decay, or AdamW). `optimizer=` replaces the recipe's optimizer (then no L2 term is
added). The detector keeps its weights: checkpoint and export the detector, not the Trainer.
"""

import keras

from tfdet.engine import optim, step
from tfdet.engine.settings import train_block


class Trainer(keras.Model):
    """Trains `detector` (anything with compute_losses(batch, training) -> {name: scalar}) with the
    `train` block's recipe. `element_spec`: the per-replica batch spec, or a callable returning it
    (read when the step is traced), re-asserted on every batch (multi-worker input drops static shapes)."""

    def __init__(self, detector, train=None, steps_per_epoch=1, optimizer=None, element_spec=None, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{detector.name}_trainer"), **kwargs)
        if not detector.built:
            detector.build(None)
        self.detector = detector
        train = train_block(train)
        if optimizer is None:
            optimizer, l2 = optim.build_optimizer(train, steps_per_epoch)
        else:
            l2 = 0.0
        self.options = step.StepOptions(l2_weight_decay=l2, clip_norm=float(train.clip_norm))
        self._element_spec = element_spec if callable(element_spec) else (lambda: element_spec)
        self.compile(optimizer=optimizer)

    def call(self, inputs, training=False):
        return self.detector(inputs, training=training)

    def train_step(self, batch):
        batch = step.with_static_shapes(batch, self._element_spec())
        return step.train_step(self.detector, batch, self.options, optimizer=self.optimizer)

    def test_step(self, batch):
        return step.test_step(self.detector, step.with_static_shapes(batch, self._element_spec()))

    def predict_step(self, batch):
        return self.detector(batch, training=False)

    def _maybe_symbolic_build(self, *args, **kwargs):
        """Keras' fit() under a strategy would "symbolically build" the model on a batch it takes from the
        training iterator (so that batch is never trained on, and a resumed run is one batch off) and
        MEAN-reduce it across replicas (which fails on bool / int batch entries). The detector is built
        when the Trainer is made; only the optimizer may be left to build."""
        self.build_optimizer_variables()

    def build_optimizer_variables(self):
        """Creates the optimizer's slots now, under the Trainer's strategy (before a checkpoint restore,
        which must find them)."""
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
