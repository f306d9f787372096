"""Run as a script by tests/engine/test_multiworker.py, once per worker, with TF_CONFIG set: trains TinyRPN
for 3 steps under MultiWorkerMirroredStrategy (a checkpoint every 2 steps) and prints the final weights'
digest as JSON. argv: shapes_dir workdir."""

import json
import sys

import tensorflow as tf

from tfdet.engine.strategy import build_strategy

strategy = build_strategy("multi_worker")  # before any other TF op

import numpy as np  # noqa: E402

from tests.engine import tiny_config  # noqa: E402
from tfdet.engine import train  # noqa: E402


def main(shapes_dir, workdir):
    config = tiny_config.get_config()
    config.data.root = shapes_dir
    config.train.update(total_steps=3, checkpoint_every=2)
    model = train.train(config, workdir, strategy=strategy, verbose=0)
    weights = [np.asarray(v) for v in model.trainable_variables]
    print("RESULT " + json.dumps({"task": strategy.cluster_resolver.task_id,
                                  "replicas": strategy.num_replicas_in_sync,
                                  "step": int(model.optimizer.iterations.numpy()),
                                  "weights": [w.ravel()[:8].tolist() for w in weights],
                                  "sums": [float(np.sum(np.abs(w), dtype=np.float64)) for w in weights]}), flush=True)


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    import keras
    keras.config.disable_traceback_filtering()
    main(*sys.argv[1:])
