"""`model.ops_impl` reaches every custom op of a detector: a composite export of the DCN backbone, the
CARAFE FPN and the CARAFE mask heads (Mask R-CNN, HTC) holds only stock TensorFlow ops, which is what
stock TF Serving loads; with the fused library loaded, the fused export holds the Tfdet ops."""

import importlib

import pytest

from tfdet.ops import loader
from tfdet.serving import ServingModule, build_serving_model, export
from tfdet.serving.graph_ops import saved_model_op_types


def _config(family, arg):
    cfg = importlib.import_module(f"configs.{family}").get_config(arg)
    if "dcn" in arg:  # a DCN ResNet-50 with the tiny heads: dcn is a ResNet option, tiny uses TinyConvNet
        tiny = importlib.import_module(f"configs.{family}").get_config("tiny")
        backbone = cfg.model.backbone
        cfg.model = tiny.model
        cfg.model.backbone = backbone
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("family,arg,expected", [
    ("mask_rcnn", "tiny,carafe", "Tfdet>Carafe"),
    ("htc", "tiny,carafe", "Tfdet>Carafe"),
    ("faster_rcnn", "backbone=r50,dcn", "Tfdet>DeformIm2col"),
])
def test_composite_export_has_no_custom_ops(family, arg, expected, tmp_path):
    impls = ["composite"] + (["fused"] if loader.library_status().module is not None else [])
    for impl in impls:
        model = build_serving_model(_config(family, arg), ops=impl)
        module = ServingModule(model, scale=(96, 64), category_ids=list(range(1, model.num_classes + 1)))
        ops = saved_model_op_types(export(module, str(tmp_path / impl), version=1, input_types=("image_tensor",),
                                          with_warmup=False))
        custom = [op for op in ops if op.startswith("Tfdet")]
        if impl == "composite":
            assert not custom, (family, arg, custom)
        else:
            assert any(op.startswith(expected) for op in custom), (family, arg, custom)
