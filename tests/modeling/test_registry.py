"""The registries and the config contract: parts by type (name or module path), each block's unknown keys
refused with the key and the block named, defaults in one place, old roi blocks still read, and the
generic Detector composing any parts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.modeling.test_detectors import config, make_batch
from tfdet.engine import Trainer
from tfdet.modeling import registry
from tfdet.modeling.detectors import DETECTORS, Detector, MaskRCNN, build_detector
from tfdet.modeling.roi_heads import standard


def test_registry_names_module_paths_and_duplicates():
    reg = registry.Registry("widget", "model.widget.type")
    reg.register("A", int)
    assert reg.get("A") is int and reg["A"] is int and "A" in reg and reg.names() == ["A"]
    assert reg.get("collections:OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(ValueError, match=r"model.widget.type: unknown widget 'B' .*\['A'\].*package.module:Name"):
        reg.get("B")
    with pytest.raises(ValueError, match="model.widget.type 'no_such_module:X': cannot import X"):
        reg.get("no_such_module:X")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("A", float)
    reg.register("A", int)  # the same object again (a module imported twice) is fine


def test_every_part_is_registered_by_type():
    assert {"ResNet", "ResNeXt", "FishNet", "TinyConvNet"} <= set(registry.BACKBONES.names())
    # Other tests (tests/extending) register plug-in parts in the same process: check tfdet's own ones.
    assert "FPN" in registry.NECKS.names() and "ConvFC" in registry.BOX_HEADS.names()
    assert registry.PROPOSAL_HEADS.names() == ["GARPN", "RPN"]
    assert registry.DENSE_HEADS.names() == ["GARetina", "Retina"]
    assert registry.ROI_HEADS.names() == ["cascade", "htc", "standard"]
    assert {"Detector", "FasterRCNN", "MaskRCNN", "HybridTaskCascade", "RetinaNet", "RPN"} <= set(DETECTORS.names())


@pytest.mark.parametrize("block,key", [("model", "num_clases"), ("model.rpn", "nms_iouu"), ("model.roi", "pooled"),
                                       ("model.mask", "num_conv"), ("model.keypoint", "heatmap"),
                                       ("model.neck", "out_chanels"), ("model.backbone", "dept")])
def test_unknown_keys_are_refused_naming_key_and_block(block, key):
    family = "keypoint_rcnn" if block == "model.keypoint" else "mask_rcnn"
    cfg = config(family).model
    target = cfg if block == "model" else cfg[block.split(".")[1]]
    target[key] = 1
    with pytest.raises(ValueError, match=rf"{block}.*{key}"):
        build_detector(cfg, build=False)


@pytest.mark.parametrize("family,block", [("cascade_rcnn", "cascade"), ("htc", "htc"), ("retinanet", "retina")])
def test_unknown_keys_in_family_blocks(family, block):
    cfg = config(family).model
    cfg[block]["bogus"] = 1
    with pytest.raises(ValueError, match=rf"model.{block}.*bogus"):
        build_detector(cfg, build=False)


def test_box_head_options_are_checked_and_used():
    cfg = config("faster_rcnn").model
    cfg.roi.box_head.num_conv = 2
    with pytest.raises(ValueError, match=r"model.roi.box_head.*num_conv"):
        build_detector(cfg, build=False)
    cfg = config("faster_rcnn").model
    cfg.roi.box_head.update(num_convs=2, conv_dim=8, num_fcs=1, fc_dim=16)
    cfg.roi.box_head.norm = {"type": "gn", "num_groups": 4}
    model = build_detector(cfg)
    head = model.bbox_head
    assert (len(head.convs), len(head.norms), len(head.fcs)) == (2, 2, 1)
    assert isinstance(head.norms[0], keras.layers.GroupNormalization) and not head.convs[0].use_bias
    out = model(make_batch())
    assert out["detection_boxes"].shape[1] == cfg.roi.max_detections


def test_pooler_options_reach_every_roi_align():
    cfg = config("mask_rcnn").model
    cfg.roi.update(sampling_ratio=2, aligned=False)
    cfg.mask.update(sampling_ratio=3, aligned=True, pooled_size=7)
    model = build_detector(cfg, build=False)
    assert (model.box_roi_align.sampling_ratio, model.box_roi_align.aligned) == (2, False)
    assert (model.mask_roi_align.sampling_ratio, model.mask_roi_align.aligned) == (3, True)
    assert model.mask_roi_align.output_size == (7, 7)


def test_num_classes_and_missing_parts_are_clear():
    for bad in (0, -1, 2.5, True):
        cfg = config("faster_rcnn").model.to_dict()
        cfg["num_classes"] = bad
        with pytest.raises(ValueError, match="model.num_classes must be a positive integer"):
            build_detector(cfg, build=False)
    cfg = config("mask_rcnn").model
    del cfg["mask"]
    with pytest.raises(ValueError, match=r"MaskRCNN needs the field\(s\) \['mask'\]"):
        build_detector(cfg, build=False)
    cfg = config("faster_rcnn").model
    cfg.mask = config("mask_rcnn").model.mask
    with pytest.raises(ValueError, match=r"FasterRCNN has no \['mask'\] part.*'Detector'"):
        build_detector(cfg, build=False)
    cfg = config("faster_rcnn").model
    del cfg["rpn"]
    with pytest.raises(ValueError, match="needs the field"):
        build_detector(cfg, build=False)


def test_defaults_live_with_their_parts():
    """A config states only what it changes: dropping a field that equals its part's default builds the
    same model."""
    full = config("mask_rcnn").model
    trimmed = config("mask_rcnn").model
    for key, value in standard.MASK_DEFAULTS.items():
        if key in trimmed.mask and trimmed.mask[key] == value:
            del trimmed.mask[key]
    assert len(trimmed.mask) < len(full.mask)
    keras.utils.set_random_seed(5)
    a = build_detector(full)
    keras.utils.set_random_seed(5)
    b = build_detector(trimmed)
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    np.testing.assert_allclose(a(make_batch())["detection_masks"], b(make_batch())["detection_masks"], atol=1e-6)


def test_roi_blocks_written_before_box_head_are_read(caplog):
    cfg = config("faster_rcnn").model
    fc_dim = cfg.roi.box_head.fc_dim
    del cfg.roi["box_head"]
    cfg.roi.fc_dim = 48
    model = build_detector(cfg, build=False)
    assert model.bbox_head.fc_dim == 48 and fc_dim != 48
    assert "box_head.fc_dim" in caplog.text


def test_generic_detector_composes_mask_and_keypoint_branches():
    """model.type "Detector" takes any parts: Mask R-CNN with a keypoint branch trains and infers."""
    cfg = config("mask_rcnn").model
    cfg.type = "Detector"
    cfg.keypoint = config("keypoint_rcnn").model.keypoint
    keras.utils.set_random_seed(6)
    model = build_detector(cfg)
    assert type(model) is Detector and not isinstance(model, MaskRCNN)
    batch = make_batch()
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(1e-3))
    logs = trainer.train_step(batch)
    assert {"mask", "keypoint", "rcnn_cls", "rpn_cls"} <= set(logs) and np.isfinite(float(logs["loss"]))
    out = model(batch)
    assert {"detection_masks", "detection_keypoints"} <= set(out)


def test_detector_fit_points_to_the_engine():
    model = build_detector(config("faster_rcnn").model)
    model.compile(optimizer="sgd")
    data = tf.data.Dataset.from_tensors(make_batch())
    with pytest.raises(TypeError, match="tfdet.engine.Trainer"):
        model.fit(data, epochs=1, verbose=0)


def test_modeling_imports_nothing_from_the_engine():
    import subprocess
    import sys

    code = ("import sys, pkgutil, importlib, tfdet.modeling as m\n"
            "for info in pkgutil.walk_packages(m.__path__, 'tfdet.modeling.'):\n"
            "    importlib.import_module(info.name)\n"
            "print(sorted(k for k in sys.modules if k.startswith('tfdet.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("family", ["faster_rcnn", "mask_rcnn", "keypoint_rcnn", "cascade_rcnn", "cascade_mask_rcnn",
                                    "htc", "retinanet", "rpn", "ga_rpn", "ga_faster_rcnn", "ga_retinanet"])
def test_checkpoint_keys_are_those_of_earlier_checkpoints(family):
    """Engine checkpoints store weights by path (tfdet.engine.checkpoint): every tiny config's paths and
    shapes are those the code wrote before RoI heads became specs (commit cb3b7eb), so its checkpoints load."""
    import json
    import os

    from tfdet.engine.checkpoint import weights_by_path

    with open(os.path.join(os.path.dirname(__file__), "fixtures", "weight_paths_cb3b7eb.json")) as f:
        earlier = json.load(f)[family]
    model = build_detector(config(family).model)
    assert {k: list(v.shape) for k, v in weights_by_path(model).items()} == earlier


@pytest.mark.parametrize("family", ["mask_rcnn", "cascade_mask_rcnn"])
def test_carafe_layers_have_fixed_names(family):
    """CARAFE upsamplers are named by place (fpn/upsample{level}, <mask head>/upsample), not numbered by
    creation order, so their weight paths do not depend on what else the process built."""
    from tfdet.engine.checkpoint import weights_by_path

    cfg = config(family, "tiny,carafe").model
    first, second = (sorted(weights_by_path(build_detector(cfg))) for _ in range(2))
    assert first == second
    carafe = {"/".join(k.split("/")[:2]) for k in first if "channel_compressor" in k}
    heads = ["mask_head"] if family == "mask_rcnn" else ["mask_head1", "mask_head2", "mask_head3"]
    assert carafe == {"fpn/upsample2", "fpn/upsample3", "fpn/upsample4"} | {f"{h}/upsample" for h in heads}


def test_checkpoints_with_numbered_carafe_names_restore_by_place(tmp_path, caplog):
    """A checkpoint written when CARAFE upsamplers were numbered by creation order (cascade: mask_head1..3's
    carafe_upsample, _1, _2, then fpn's _3.._5) restores into today's place-named layers, level by level."""
    from tfdet.engine.checkpoint import restore, weights_by_path

    cfg = config("cascade_mask_rcnn", "tiny,carafe").model
    source, target = build_detector(cfg), build_detector(cfg)
    numbers = {"mask_head1/upsample": 0, "mask_head2/upsample": 1, "mask_head3/upsample": 2,
               "fpn/upsample2": 3, "fpn/upsample3": 4, "fpn/upsample4": 5}
    earlier = {}
    for key, variable in weights_by_path(source).items():
        variable.assign(tf.random.uniform(variable.shape, seed=len(earlier)) if variable.trainable else variable)
        for new, n in numbers.items():
            if key.startswith(new + "/"):
                key = key.replace(new.split("/")[1], "carafe_upsample" + (f"_{n}" if n else ""), 1)
        earlier[key] = variable
    assert sum("carafe_upsample" in k for k in earlier) > 6
    path = tf.train.Checkpoint(weights=earlier).write(str(tmp_path / "ckpt"))
    with caplog.at_level("WARNING"):
        restore(target, path)
    assert "fpn/carafe_upsample_3 -> fpn/upsample2" in caplog.text
    for key, variable in weights_by_path(target).items():
        np.testing.assert_array_equal(variable.numpy(), weights_by_path(source)[key].numpy(), err_msg=key)
