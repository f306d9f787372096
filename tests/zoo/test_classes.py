"""tfdet.zoo.classes: choosing classes by category id or name, and keeping their channels of each kind of
class layer (softmax with the background last, class-specific boxes, per-class maps, RetinaNet's
anchor-major classifier); the torchvision converter's class space and its --classes conversion."""

import numpy as np
import pytest

from tests.zoo import fixtures_io
from tests.zoo.test_torchvision_models import fixture_state_dict
from tfdet.zoo import classes
from tfdet.zoo import torchvision as tv


def test_class_indices_by_id_and_name_in_the_given_order():
    ids, names = [1, 3, 5, 9], ["person", "car", "N/A", "N/A"]
    assert classes.class_indices(["3", "person", 9], ids, names) == [1, 0, 3]
    with pytest.raises(ValueError) as err:
        classes.class_indices(["2", "bus", "N/A", "car", "3"], ids, names)
    message = str(err.value)
    for part in ("'2' (no category id)", "'bus' (no class name)", "'N/A' (2 class names)", "'3' (given twice)",
                 "1 'person'"):
        assert part in message, message
    with pytest.raises(ValueError, match="no classes selected"):
        classes.class_indices([], ids, names)


def test_select_classes_per_kind():
    c, keep = 4, [2, 0]
    x = np.arange(10.0)[:, None]  # 10 input rows
    weights = {
        "cls/kernel": x + np.arange(c + 1)[None],  # [10, C + 1], background last
        "cls/bias": np.arange(c + 1.0),
        "reg/kernel": x + np.arange(4 * c)[None], "reg/bias": np.arange(4.0 * c),
        "mask/kernel": np.arange(3 * c, dtype=float).reshape(1, 1, 3, c), "mask/bias": np.arange(1.0 * c),
        "retina/kernel": np.arange(2 * 3 * c, dtype=float).reshape(1, 1, 2, 3 * c),  # 3 anchors, a * C + c
        "other/kernel": np.ones((3, 3)),
    }
    layers = [("cls/", "classes+background"), ("reg/", "boxes"), ("mask/", "classes"), ("retina/", "anchor_major")]
    out = classes.select_classes(weights, layers, keep, c)
    np.testing.assert_array_equal(out["cls/bias"], [2, 0, 4])
    np.testing.assert_array_equal(out["cls/kernel"], weights["cls/kernel"][:, [2, 0, 4]])
    np.testing.assert_array_equal(out["reg/bias"], [8, 9, 10, 11, 0, 1, 2, 3])
    np.testing.assert_array_equal(out["mask/bias"], [2, 0])
    np.testing.assert_array_equal(out["mask/kernel"][0, 0, 1], [6, 4])  # row 1 is 4..7
    np.testing.assert_array_equal(out["retina/kernel"][0, 0, 0], [2, 0, 6, 4, 10, 8])
    assert out["other/kernel"] is weights["other/kernel"]
    with pytest.raises(ValueError, match="has 20 output channels, this one 12"):
        classes.select_classes(weights, [("retina/", "boxes")], keep, 5)
    with pytest.raises(ValueError, match="distinct class indices"):
        classes.select_classes(weights, layers, [1, 1], c)
    with pytest.raises(ValueError, match="no weight under"):
        classes.select_classes(weights, [("box/", "classes")], keep, c)


def test_torchvision_class_space():
    ids, names = tv.source_classes("maskrcnn_resnet50_fpn")
    assert ids == list(range(1, 91)) and names[0] == "person" and names[89] == "toothbrush"
    assert [i for i, n in zip(ids, names) if n == "N/A"] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert tv.source_classes("keypointrcnn_resnet50_fpn") == ([1], ["person"])
    ids, names = tv.source_classes("retinanet_resnet50_fpn")
    assert ids == list(range(91)) and names[0] == "__background__"
    config = tv.tfdet_config("fasterrcnn_resnet50_fpn", classes=[2, 0])
    assert config.model.num_classes == 2 and list(config.data.category_ids) == [3, 1]
    assert list(config.data.class_names) == ["car", "person"]
    other = tv.tfdet_config("fasterrcnn_resnet50_fpn", num_classes=5)
    assert other.data.category_ids is None and other.data.class_names is None
    full = tv.tfdet_config("fasterrcnn_resnet50_fpn")
    assert (full.data.size_rule, full.data.serving_pad) == ("torchvision", "batch")


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn"])
def test_torchvision_convert_keeps_the_chosen_classes(name):
    meta, arrays = fixtures_io.load("torchvision", name)
    sd = fixture_state_dict(meta, arrays)
    full = tv.convert(sd, name)
    keep = [2, 0]  # tfdet classes: Mask R-CNN COCO ids 3, 1; RetinaNet labels 2, 0
    chosen = tv.convert(sd, name, classes=keep)
    assert sorted(chosen) == sorted(full)
    for path, value in full.items():
        if not path.startswith(tv.CLASS_LAYERS):
            np.testing.assert_array_equal(chosen[path], value)
    if name.startswith("mask"):
        np.testing.assert_array_equal(chosen["bbox_head/cls/kernel"], full["bbox_head/cls/kernel"][:, [2, 0, 90]])
        np.testing.assert_array_equal(chosen["bbox_head/reg/bias"],
                                      full["bbox_head/reg/bias"][[8, 9, 10, 11, 0, 1, 2, 3]])
        np.testing.assert_array_equal(chosen["mask_head/logits/kernel"], full["mask_head/logits/kernel"][..., keep])
        # torchvision's rows: cls_score row 3 (label 3) is the kept class 0
        np.testing.assert_array_equal(chosen["bbox_head/cls/kernel"][:, 0],
                                      sd["roi_heads.box_predictor.cls_score.weight"][3])
    else:
        cls = sd["head.classification_head.cls_logits.weight"]  # [9 * 91, 256, 3, 3], anchor-major
        want = np.stack([cls[a * 91 + k] for a in range(9) for k in keep])
        np.testing.assert_array_equal(chosen["retina_head/retina_cls/kernel"], want.transpose(2, 3, 1, 0))
    with pytest.raises(ValueError, match="not both"):
        tv.convert(sd, name, num_classes=3, classes=keep)
