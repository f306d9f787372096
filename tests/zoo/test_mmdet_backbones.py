"""tfdet's ResNet / ResNeXt backbones (pytorch and caffe style, dconv and mdconv in c3-c5) against
mmdetection's, on the reference fixtures (tools/zoo_reference/mmdet_ref.py): the mmdet checkpoint keys
`backbone.*` load with tfdet.modeling.backbones.weights as they are, and C2-C5 agree to 1e-4 of their
largest value."""

import pytest

from tests.zoo import mmdet_fixture
from tfdet.modeling.backbones.weights import load_torch_state_dict

TOLERANCE = 1e-4

FIXTURES = [
    "faster_rcnn_r50_fpn",  # R-50 pytorch style
    "ga_rpn_r50_caffe_fpn",  # R-50 caffe style (BGR input)
    pytest.param("faster_rcnn_r50_dconv_c3-c5_fpn", marks=pytest.mark.slow),
    pytest.param("mask_rcnn_r50_mdconv_c3-c5_fpn", marks=pytest.mark.slow),
    pytest.param("backbone_r101", marks=pytest.mark.slow),
    pytest.param("backbone_x101_32x4d", marks=pytest.mark.slow),
    pytest.param("backbone_x101_64x4d", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_stages_equal_mmdetection(name):
    meta, arrays = mmdet_fixture.load(name)
    model = mmdet_fixture.tfdet_backbone(meta["backbone"])
    report = load_torch_state_dict(model, mmdet_fixture.weights(meta, arrays, "backbone."))
    assert report["loaded"]
    x = mmdet_fixture.network_input(meta, arrays)
    assert mmdet_fixture.relative_error(arrays, "input/batch_inputs", x) < 1e-6
    outputs = model(x)
    errors = {lvl: mmdet_fixture.relative_error(arrays, f"stage/backbone/c{lvl}", outputs[lvl].numpy())
              for lvl in (2, 3, 4, 5)}
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
def test_backbone_check_can_fail():
    """A wrong style gives different C3 (the comparison is not vacuous)."""
    meta, arrays = mmdet_fixture.load("ga_rpn_r50_caffe_fpn")
    model = mmdet_fixture.tfdet_backbone({**meta["backbone"], "style": "pytorch"})
    load_torch_state_dict(model, mmdet_fixture.weights(meta, arrays, "backbone."))
    c3 = model(mmdet_fixture.network_input(meta, arrays))[3].numpy()
    assert mmdet_fixture.relative_error(arrays, "stage/backbone/c3", c3) > 0.1
