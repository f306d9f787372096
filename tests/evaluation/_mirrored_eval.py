"""Run as a script (tests/evaluation/test_runner.py does, in a fresh process): splits the CPU into two
logical devices and evaluates a checkpoint of the GT-derived fake detector under a 2-replica
MirroredStrategy and on one device, with an odd batch size (a padded last batch), and prints a JSON
{"replicas", "same", "ap"}."""

import json
import os
import sys
import tempfile

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.data.coco_files import TINY_SHAPES  # noqa: E402
from tests.evaluation.fakes import make_gt_detector  # noqa: E402
from tfdet.data import coco, shapes  # noqa: E402
from tfdet.engine.checkpoint import weights_by_path  # noqa: E402
from tfdet.engine.strategy import build_strategy  # noqa: E402
from tfdet.evaluation import runner  # noqa: E402


def main():
    tmp = tempfile.mkdtemp()
    split = shapes.ensure_shapes(os.path.join(tmp, "shapes"), **TINY_SHAPES)["val"]
    reader = coco.CocoReader(split.ann_file, split.image_dir)
    tf.train.CheckpointManager(tf.train.Checkpoint(weights=weights_by_path(make_gt_detector(reader, offset=1.5))), tmp + "/work", 2).save(1)
    s = runner.EvalSettings(annotations=split.ann_file, images=split.image_dir, scale=(160, 100), batch_size=3)
    build = lambda: make_gt_detector(reader, offset=40.0)  # noqa: E731
    single = runner.run_checkpoint(s, build, tmp + "/work", print_fn=lambda x: None)
    strategy = build_strategy("mirrored")
    mirrored = runner.run_checkpoint(s, build, tmp + "/work", print_fn=lambda x: None, strategy=strategy)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "same": single == mirrored,
                      "ap": mirrored["bbox"]["metrics"]["AP"]}))


if __name__ == "__main__":
    main()
