"""model.retina.min_size (mmdetection RetinaNet's min_bbox_size): decoded boxes with a side <= min_size are
dropped before NMS; None (the default) keeps every box."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.dense_heads import RetinaSpec
from tfdet.modeling.dense_heads.retina_head import retina_detections
from tfdet.modeling.detectors import build_detector


@pytest.mark.parametrize("topk_mode", ["anchor", "anchor_class"])
def test_min_size_drops_empty_boxes(topk_mode):
    probs = np.array([[0.9, 0.01], [0.8, 0.01], [0.7, 0.01]], np.float32)  # 3 anchors x 2 classes
    logits = [tf.constant(np.log(probs / (1 - probs)).reshape(1, 1, 1, 6))]
    deltas = [tf.zeros([1, 1, 1, 12])]
    # anchor 1 lies right of the 64-pixel image: clipped to zero width; anchor 2 is 0.5 px wide
    anchors = [tf.constant([[0.0, 0.0, 10.0, 10.0], [70.0, 20.0, 80.0, 30.0], [40.0, 40.0, 40.5, 50.0]])]
    common = dict(image_sizes=tf.constant([[64.0, 64.0]]), num_classes=2, pre_nms_top_k=3, max_detections=10,
                  topk_mode=topk_mode)
    kept = {m: retina_detections(logits, deltas, anchors, **common, min_size=m) for m in (None, 0.0, 0.5)}
    assert [int(kept[m].num_valid[0]) for m in (None, 0.0, 0.5)] == [3, 2, 1]
    np.testing.assert_allclose(kept[0.0].scores[0, :2], [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(kept[0.5].boxes[0, 0], [0, 0, 10, 10])
    default = retina_detections(logits, deltas, anchors, **common)
    np.testing.assert_array_equal(default.boxes, kept[None].boxes)


def test_min_size_config_field_and_round_trip():
    assert RetinaSpec.DEFAULTS["min_size"] is None
    config = importlib.import_module("configs.retinanet").get_config("tiny").model
    assert "min_size" not in config.retina or config.retina.min_size is None
    config.retina.min_size = 0.0
    model = build_detector(config)
    assert model.retina.block.min_size == 0.0
    clone = type(model).from_config(model.get_config())
    assert clone.model_config.retina.min_size == 0.0 and type(clone.retina).__name__ == "RetinaSpec"
    with pytest.raises(ValueError, match="unknown field"):
        RetinaSpec({"min_sizes": 0.0}, 3)
