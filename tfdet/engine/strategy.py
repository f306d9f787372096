"""tf.distribute strategies chosen by a flag (bin/train.py's and bin/evaluate.py's --strategy).

  default       no distribution: TensorFlow's default strategy (ops placed as TF places them)
  one_device    OneDeviceStrategy on the first GPU, else the CPU
  mirrored      MirroredStrategy over `devices`, else the local GPUs, else every logical CPU (one
                unless the process split the CPU into logical devices, as tests do)
  multi_worker  MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG environment variable
                ({"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}})
  tpu           TPUStrategy on the TPU named by `tpu` ("" = the local TPU / the one the environment names)

Every replica runs the detector's step on batch_size / num_replicas images; the engine's train step
(`tfdet.engine.step`) divides each replica's loss by the number of replicas, so the summed gradients
are the gradient of the mean loss over the global batch.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def build_strategy(name, devices=None, tpu=""):
    """The strategy called `name` (one of STRATEGIES). Raises ValueError naming the choices."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    # Listing devices starts TensorFlow's context, after which MultiWorkerMirroredStrategy cannot configure
    # its collective ops: list them only for the strategies that use them.
    if name in ("one_device", "mirrored"):
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else (gpus[0] if gpus else "/cpu:0"))
    if name == "mirrored":
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices or gpus or cpus)
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             '({"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}).')
        try:
            cluster = json.loads(config)["cluster"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' entry: {config!r}") from err
        if not cluster.get("worker"):
            raise ValueError(f"TF_CONFIG names no workers: {config!r}")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True for the worker that writes checkpoints, summaries and exports (worker 0 / the only one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0
                                                          and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(workdir, strategy):
    """Where this worker writes: `workdir` for the chief, a private temporary folder for the others
    (multi-worker checkpointing needs every worker to save; only the chief's copy is kept)."""
    if is_chief(strategy):
        return workdir
    return os.path.join(workdir, f"workertemp_{strategy.cluster_resolver.task_id}")
