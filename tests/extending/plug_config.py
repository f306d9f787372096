"""A config whose parts come from outside tfdet (tests/extending/parts.py): the PlugRCNN detector and the
OneConv box head registered by name when this file imports them, the plug_net backbone by module path.
Data: the shapes split under $TFDET_TEST_SHAPES_DIR (tests.engine.tiny_config's)."""

import os

from configs import common
from tests.engine import tiny_config
from tests.extending import parts  # noqa: F401  (registers PlugRCNN and OneConv)


def get_config(arg=None):
    cfg = common.make_config("tiny", "PlugRCNN", {"rpn": common.rpn, "roi": common.roi})
    cfg.model.backbone = dict(type="tests.extending.parts:plug_net", width=8)
    cfg.model.roi.box_head = dict(type="OneConv", channels=16)
    cfg.data.update(root=os.environ.get("TFDET_TEST_SHAPES_DIR"), shapes=tiny_config.SHAPES, scale=(128, 96),
                    max_instances=4, shuffle_buffer=16)
    cfg.train.update(batch_size=2, total_steps=6, steps_per_epoch=3, warmup_steps=2, decay_epochs=(), checkpoint_every=3,
                     log_every=1)
    return cfg
