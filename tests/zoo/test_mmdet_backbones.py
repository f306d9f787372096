"""tfdet's ResNet / ResNeXt backbones (pytorch and caffe style, dconv and mdconv in c3-c5) against
mmdetection's, on the reference fixtures (tools/zoo_reference/mmdet_ref.py), through the converter: the arch
name gives the backbone block and the `backbone.*` rows of tfdet.zoo.mmdet's parameter table (caffe style:
conv1's input channels reversed, the input RGB with the reversed mean), and C2-C5 agree to 1e-4 of their
largest value."""

import numpy as np
import pytest

from tests.zoo import mmdet_fixture
from tfdet.engine.checkpoint import weights_by_path
from tfdet.modeling.backbones import build_backbone
from tfdet.zoo import mmdet

TOLERANCE = 1e-4

FIXTURES = [  # (fixture, the arch whose backbone it has)
    ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn"),  # R-50 pytorch style
    ("ga_rpn_r50_caffe_fpn", "rpn_r50_caffe_fpn"),  # R-50 caffe style (BGR input)
    pytest.param("faster_rcnn_r50_dconv_c3-c5_fpn", "faster_rcnn_r50_dconv_c3-c5_fpn", marks=pytest.mark.slow),
    pytest.param("mask_rcnn_r50_mdconv_c3-c5_fpn", "mask_rcnn_r50_mdconv_c3-c5_fpn", marks=pytest.mark.slow),
    pytest.param("backbone_r101", "faster_rcnn_r101_fpn", marks=pytest.mark.slow),
    pytest.param("backbone_x101_32x4d", "faster_rcnn_x101_32x4d_fpn", marks=pytest.mark.slow),
    pytest.param("backbone_x101_64x4d", "faster_rcnn_x101_64x4d_fpn", marks=pytest.mark.slow),
]


def backbone_outputs(name, arch):
    """(meta, arrays, {level: C_level}) of the fixture's backbone converted as `arch`'s."""
    meta, arrays = mmdet_fixture.load(name)
    spec = mmdet.describe(arch=arch)
    config = mmdet.tfdet_config(spec)
    table = {k: p for k, p in mmdet.params(spec).items() if k.startswith("backbone.")}
    sd = mmdet.canonical(mmdet_fixture.weights(meta, arrays, "backbone."), mmdet.FAMILIES[spec["family"]])
    assert set(sd) == set(table), sorted(set(sd) ^ set(table))[:5]
    model = build_backbone(config.model.backbone)
    variables = weights_by_path(model)
    assert sorted(variables) == sorted(p.path for p in table.values())
    for key, param in table.items():
        variables[param.path].assign(param.transform(sd[key]))
    height, width = meta["batch_input_shape"]
    image = arrays["input/images"].astype(np.float32)  # RGB; tfdet's input order whatever the style
    x = np.zeros((1, height, width, 3), np.float32)
    x[:, :image.shape[1], :image.shape[2]] = (image - np.float32(config.model.pixel_mean)) / np.float32(
        config.model.pixel_std)
    return meta, arrays, x, {int(k): v.numpy() for k, v in model(x).items()}


@pytest.mark.parametrize("name, arch", FIXTURES)
def test_backbone_stages_equal_mmdetection(name, arch):
    meta, arrays, x, outputs = backbone_outputs(name, arch)
    assert meta["backbone"]["style"] == mmdet.parse_arch(arch).style
    if not meta["data_preprocessor"]["bgr_to_rgb"]:
        x = x[..., ::-1]  # mmdet's network input: BGR
    assert mmdet_fixture.relative_error(arrays, "input/batch_inputs", x) < 1e-6
    errors = {lvl: mmdet_fixture.relative_error(arrays, f"stage/backbone/c{lvl}", outputs[lvl]) for lvl in (2, 3, 4, 5)}
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
def test_backbone_check_can_fail():
    """The caffe fixture converted as a pytorch-style backbone gives different C3 (the style matters and the
    comparison is not vacuous)."""
    _, arrays, _, outputs = backbone_outputs("ga_rpn_r50_caffe_fpn", "rpn_r50_fpn")
    assert mmdet_fixture.relative_error(arrays, "stage/backbone/c3", outputs[3]) > 0.1
