"""Strategy and input construction from flags/config: the right kinds, clear errors."""

import json

import pytest
import tensorflow as tf

from tfdet.data import train_input
from tfdet.engine import strategy


def test_one_device_and_mirrored_on_cpu(tmp_path):
    one = strategy.build_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and one.num_replicas_in_sync == 1
    mirrored = strategy.build_strategy("mirrored", devices=["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert strategy.is_chief(one) and strategy.worker_dir(str(tmp_path), one) == str(tmp_path)


@pytest.mark.parametrize("name,env,message", [
    ("gpus_everywhere", None, "--strategy must be one of"),
    ("multi_worker", None, "needs the TF_CONFIG"),
    ("multi_worker", "not json", "TF_CONFIG is not a JSON object"),
    ("multi_worker", json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}),
     "names no workers"),
])
def test_bad_strategy_flags(monkeypatch, name, env, message):
    if env is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", env)
    with pytest.raises(ValueError, match=message):
        strategy.build_strategy(name)


@pytest.mark.parametrize("block,message", [
    ({"source": "imagenet"}, "config.data.source must be"),
    ({"resume": "rewind"}, "config.data.resume must be"),
    ({"image_sizes": (1, 2)}, r"config.data: unknown field\(s\) \['image_sizes'\]"),
])
def test_bad_data_blocks(block, message):
    with pytest.raises(ValueError, match=message):
        train_input.TrainInput(block, 2, 0)


def test_input_resume_skips_consumed_batches(tiny):
    config = tiny()
    source = train_input.TrainInput(config.data, 2, 0)
    ids = [b["image_id"].numpy().tolist() for b in source.dataset(None, 0).take(5)]
    resumed = [b["image_id"].numpy().tolist() for b in source.dataset(None, 3).take(2)]
    assert resumed == ids[3:5]
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    per_replica = [b["image_id"].numpy().tolist() for b in source.dataset(ctx, 1).take(4)]
    assert sum(per_replica, []) == sum(ids[1:3], [])  # 2 replicas: step 1 = per-replica batches 2 and 3
