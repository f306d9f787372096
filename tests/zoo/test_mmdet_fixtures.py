"""The mmdetection reference fixtures (tools/zoo_reference/mmdet_ref.py) are complete and usable: every
stored stage resolves (sharing included), every weight of the source model can be rebuilt, and the parts
tfdet can already compute without a converter agree with them (anchors, mask pasting)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import mmdet_fixture
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.ops.anchors import AnchorGenerator
from tfdet.zoo import synthetic

NAMES = sorted(p.stem for p in mmdet_fixture.ROOT.glob("*.npz") if p.stem != "ops")
MASK_RCNN = ["mask_rcnn_r50_fpn", "mask_rcnn_r50_fpn_carafe", "mask_rcnn_r50_mdconv_c3-c5_fpn"]


def test_fixture_set():
    """The mmdetection models of the zoo each have a fixture."""
    expected = {"faster_rcnn_r50_fpn", "mask_rcnn_r50_fpn", "cascade_rcnn_r50_fpn", "cascade_mask_rcnn_r50_fpn",
                "htc_r50_fpn", "retinanet_r50_fpn", "rpn_r50_fpn", "ga_rpn_r50_caffe_fpn",
                "ga_faster_rcnn_r50_caffe_fpn", "ga_retinanet_r50_caffe_fpn", "faster_rcnn_r50_fpn_carafe",
                "mask_rcnn_r50_fpn_carafe", "faster_rcnn_r50_dconv_c3-c5_fpn", "mask_rcnn_r50_mdconv_c3-c5_fpn",
                "backbone_r101", "backbone_x101_32x4d", "backbone_x101_64x4d"}
    assert expected <= set(NAMES), sorted(expected - set(NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_complete(name):
    meta, arrays = mmdet_fixture.load(name)
    assert meta["source"] == "mmdet" and meta["name"] == name and meta["layout"] == "mmdet2"
    assert set(meta["overrides"]) <= set(meta["keys"])
    for stage in meta["stages"]:
        if stage in arrays:
            continue
        size = int(np.prod(arrays[f"{stage}/stats"][3:]))
        assert arrays[f"{stage}/sample"].shape == synthetic.sample_indices(size).shape, stage
    stored = {k.rsplit("/", 1)[0] if k.endswith(("/sample", "/stats")) else k for k in arrays if k.startswith("stage/")}
    assert stored == set(meta["stages"])
    # Every BN statistic of the model is stored (or shared): the test side can rebuild every weight.
    statistics = [k for k in meta["keys"] if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(f"bn/{k}" in arrays for k in statistics)
    for key in statistics:
        assert arrays[f"bn/{key}"].dtype == np.float16 and np.all(np.isfinite(arrays[f"bn/{key}"]))
    assert np.all(arrays["bn/" + next(k for k in statistics if k.endswith("running_var"))] > 0)
    image = meta["image"]
    np.testing.assert_array_equal(arrays["input/images"][0], synthetic.synthetic_image(*image["size"], image["seed"]))


def test_rpn_fixture_has_the_2x_layout():
    """mmdet 2.x RPN checkpoints keep `rpn_head.`; 3.x builds `bbox_head.` (mmdet_conventions.md 1.1)."""
    meta, _ = mmdet_fixture.load("rpn_r50_fpn")
    assert any(k.startswith("rpn_head.") for k in meta["keys"])
    assert not any(k.startswith("bbox_head.") for k in meta["keys"])


@pytest.mark.parametrize("name, strides, generator", [
    ("rpn_r50_fpn", (4, 8, 16, 32, 64), dict(scales=(8,))),
    ("retinanet_r50_fpn", (8, 16, 32, 64, 128), dict(octave_base_scale=4, scales_per_octave=3)),
])
def test_anchors_equal_the_fixture(name, strides, generator):
    meta, arrays = mmdet_fixture.load(name)
    levels = meta["levels"]
    sizes = [mmdet_fixture.shape(arrays, f"stage/neck/{lvl}")[1:3] for lvl in levels]
    for lvl, anchors in zip(levels, AnchorGenerator(strides, **generator)(sizes)):
        assert mmdet_fixture.relative_error(arrays, f"stage/anchors/{lvl}", anchors.numpy()) < 1e-6


@pytest.mark.parametrize("name", MASK_RCNN)
def test_pasted_masks_equal_the_fixture(name):
    """tfdet's paste_masks on mmdet's mask logits and boxes gives mmdet's binary masks."""
    meta, arrays = mmdet_fixture.load(name)
    logits = arrays["stage/mask/s1/logits_head"]
    count = len(logits)
    height, width = meta["mask_shape"][1:]
    masks = mmdet_fixture.det_masks(meta, arrays)
    boxes = arrays["stage/det/boxes"][:count]
    pasted = paste_masks(tf.sigmoid(logits)[None], boxes[None], (height, width))[0].numpy()
    assert masks[:count].sum() > 0
    np.testing.assert_array_equal(pasted, masks[:count])
