"""Training engine: strategies (strategy), optimizers and schedules (optim), the distributed train step
(step), callbacks, the training input (data) and the fit() driver (`tfdet.engine.train.train`)."""
