"""mmdetection Faster / Mask R-CNN (plain, dconv, mdconv), RPN and RetinaNet converted by tfdet.zoo.mmdet and run
by tfdet's own detector (built from the written config) against the reference fixtures
(tests/zoo/fixtures/mmdet), in both checkpoint layouts: each fixture's state dict as mmdet 2.x stores it (meta
CLASSES + config) and re-keyed to 3.x (meta dataset_meta + cfg; the RPN detector's head under `bbox_head.`).
The 3.x checkpoint converts to exactly the 2.x one's spec (config) and weights (checked), so one model per
fixture serves both.
The config text is the fixture's model (backbone, neck, test_cfg, data preprocessor) written as mmdetection
writes configs, so the architecture and test settings reach tfdet through the converter's config reading.

Compared: every stage the detector exposes (backbone, FPN, RPN head, proposals; RoI features and box head on
the reference proposals; RetinaNet head) within 1e-4 of the stage's largest value; proposals and detections
as sets (boxes 1e-2 px, scores 1e-4); pasted masks IoU >= 0.99 (test_masks_equal_mmdetection: the one
exception)."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io, mmdet_fixture
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.detectors.base import zero_outside
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.zoo import mmdet
from tfdet.zoo.files import load_weights
from tfdet.zoo.mmdet import labels, legacy_v1

TOLERANCE = 1e-4
DETECTORS = ["faster_rcnn_r50_fpn", "mask_rcnn_r50_fpn", "rpn_r50_fpn", "retinanet_r50_fpn",
             "faster_rcnn_r50_dconv_c3-c5_fpn", "mask_rcnn_r50_mdconv_c3-c5_fpn"]
LAYOUTS = ("mmdet2", "mmdet3")  # the checkpoint layouts checkpoint() and converted() take


def _text(value):
    """A config value as mmdetection's Config.pretty_text writes it (dict(...) calls, lists, tuples)."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_text(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def config_text(meta, layout):
    """The fixture's mmdetection config as a checkpoint stores it: the arch's model with the fixture's backbone,
    neck, test_cfg and data preprocessor, among the other statements a config has (one not a literal). A
    configs/legacy_1.x fixture's: its 2.x arch's model with the legacy settings (as mmdetection's zoo serves
    upgraded 1.x models)."""
    arch = mmdet.parse_arch(meta["name"].replace("_1x_coco_v1", ""))
    model = mmdet.FAMILIES[arch.family].mmdet_model(arch)
    if meta["config"].startswith("legacy_1.x/"):
        model = legacy_v1.as_legacy(model, legacy_v1.LEGACY_SAMPLING_RATIO)
    model.update(backbone=dict(meta["backbone"], init_cfg=dict(type="Pretrained", checkpoint="torchvision://x")),
                 neck=meta["neck"], test_cfg=meta["test_cfg"],
                 train_cfg=dict(rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7))))
    pre = meta["data_preprocessor"]
    lines = ["default_scope = 'mmdet'", "custom_hooks = [make_hook()]"]
    if layout == "mmdet3":
        model["data_preprocessor"] = pre
        lines.append("test_pipeline = [dict(type='LoadImageFromFile', backend_args=None), "
                     "dict(type='Resize', scale=(1333, 800), keep_ratio=True), dict(type='PackDetInputs')]")
    else:
        norm = f"mean={pre['mean']}, std={pre['std']}, to_rgb={pre['bgr_to_rgb']}"
        lines.append(f"img_norm_cfg = dict({norm})")
        lines.append("test_pipeline = [dict(type='LoadImageFromFile'), dict(type='MultiScaleFlipAug', "
                     "img_scale=(1333, 800), flip=False, transforms=[dict(type='Resize', keep_ratio=True), "
                     f"dict(type='Normalize', {norm}), dict(type='Pad', size_divisor={pre['pad_size_divisor']})])]")
    return "\n".join([f"model = {_text(model)}"] + lines) + "\n"


def checkpoint(name, layout):
    """(state dict, meta) of fixture `name` as an mmdet 2.x or 3.x checkpoint holds them."""
    meta, arrays = mmdet_fixture.load(name)
    sd = mmdet_fixture.weights(meta, arrays)
    sd["backbone.bn1.num_batches_tracked"] = np.zeros((), np.int64)
    if layout == "mmdet2":
        return sd, {"CLASSES": list(labels.COCO_CLASSES), "config": config_text(meta, layout),
                    "mmdet_version": "2.25.0"}
    if mmdet.FAMILIES[mmdet.parse_arch(meta["name"]).family].rpn_detector:  # RPN detectors' head: bbox_head in 3.x
        sd = {("bbox_head." + k[len("rpn_head."):] if k.startswith("rpn_head.") else k): v for k, v in sd.items()}
    return sd, {"dataset_meta": {"classes": list(labels.COCO_CLASSES)}, "cfg": config_text(meta, layout),
                "mmengine_version": "0.10.7"}


@functools.lru_cache(maxsize=None)
def conversion(name, layout):
    """(spec, {tfdet weight path: array}) of fixture `name` read from a `layout` checkpoint."""
    sd, ckpt_meta = checkpoint(name, layout)
    spec = mmdet.describe(ckpt_meta, state_dict=sd)
    return spec, mmdet.convert(sd, spec)


def assert_same_conversion(name, layout):
    """`layout`'s conversion of fixture `name` is the 2.x layout's: the same spec and the same weights."""
    spec, weights = conversion(name, layout)
    spec2, weights2 = conversion(name, "mmdet2")
    assert spec == spec2 and sorted(weights) == sorted(weights2)
    for key, value in weights2.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


@functools.lru_cache(maxsize=None)
def converted(name, layout="mmdet2"):
    """(meta, arrays, spec, model, images, sizes, outputs) of a fixture converted from `layout`; the 3.x
    layout's conversion is checked identical to the 2.x one's, whose model it then shares."""
    if layout != "mmdet2":
        assert_same_conversion(name, layout)
        return converted(name, "mmdet2")
    meta, arrays = mmdet_fixture.load(name)
    spec, weights = conversion(name, layout)
    config = mmdet.tfdet_config(spec)
    model = build_detector(config.model)
    load_weights(model, weights)
    height, width = meta["batch_input_shape"]
    image = arrays["input/images"].astype(np.float32)
    images = np.zeros((1, height, width, 3), np.float32)
    images[:, :image.shape[1], :image.shape[2]] = image
    images, sizes = tf.constant(images), tf.constant([meta["image"]["size"]], tf.float32)
    return meta, arrays, spec, model, images, sizes, model.detect(images, sizes)


def assert_stages(arrays, values):
    """{stored stage: computed value}, each within TOLERANCE of the stage's largest value."""
    errors = {k: mmdet_fixture.relative_error(arrays, k, np.asarray(v)) for k, v in values.items()}
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE} or errors


CASES = [pytest.param(name, marks=() if name == "faster_rcnn_r50_fpn" else pytest.mark.slow) for name in DETECTORS]


@pytest.mark.parametrize("name", DETECTORS)
def test_both_layouts_convert_the_same(name):
    """The 3.x checkpoint (dataset_meta, cfg; the RPN detector's `bbox_head.`) converts to the 2.x one's spec
    and weights: the detector tests below hold for both."""
    assert_same_conversion(name, "mmdet3")


@pytest.mark.parametrize("name", CASES)
def test_stages_equal_mmdetection(name):
    meta, arrays, spec, model, images, sizes, _ = converted(name)
    assert spec["arch"] == name
    assert spec["class_names"] == (None if meta["kind"] == "rpn" else list(labels.COCO_CLASSES))
    assert_model_stages(meta, arrays, model, images, sizes)


def assert_model_stages(meta, arrays, model, images, sizes):
    """Every stage of a fixture the converted model exposes equals the stored one (module docstring)."""
    normalized = zero_outside((images - model.pixel_mean) / model.pixel_std, sizes)  # RGB
    features = {int(k): v for k, v in model.backbone(normalized).items()}
    stages = {f"stage/backbone/c{lvl}": features[lvl] for lvl in features}
    if fixtures_io.has_stage(arrays, "input/batch_inputs"):  # mmdet's network input, in its channel order
        stages["input/batch_inputs"] = normalized if meta["data_preprocessor"]["bgr_to_rgb"] else normalized[..., ::-1]
    pyramid = model.features(images, image_sizes=sizes)
    levels = [int(lvl[1:]) for lvl in meta["levels"]]
    stages.update({f"stage/neck/p{lvl}": pyramid[lvl] for lvl in levels})
    maps = [pyramid[lvl] for lvl in levels]
    dense = model.retina if meta["kind"] == "retina" else model.rpn
    outputs = (model.head if meta["kind"] == "retina" else model.rpn_head)(maps)
    names = ("head/cls", "head/reg") if meta["kind"] == "retina" else ("rpn/cls", "rpn/reg")
    for lvl, first, second in zip(levels, *outputs):
        stages.update({f"stage/{names[0]}/p{lvl}": first, f"stage/{names[1]}/p{lvl}": second})
    anchors = dense.anchors([tuple(o.shape[1:3]) for o in outputs[0]])
    stages.update({f"stage/anchors/p{lvl}": a for lvl, a in zip(levels, anchors)
                   if fixtures_io.has_stage(arrays, f"stage/anchors/p{lvl}")})
    if meta["kind"] != "retina":
        objectness, deltas = outputs
        proposals = model.rpn.proposals((objectness, deltas), sizes)
        count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
        mmdet_fixture.assert_same_set(proposals.boxes[0, :count], proposals.scores[0, :count],
                                      arrays["stage/proposals/boxes"], arrays["stage/proposals/scores"])
    if meta["kind"] == "two_stage":  # the box head on the reference proposals
        rois = tf.constant(arrays["stage/proposals/boxes"][None])
        pooled = model.box_roi_align(pyramid, rois)
        cls_score, bbox_pred = model.bbox_head(pooled)
        stages.update({"stage/roi/s1/feats": pooled[0], "stage/roi/s1/cls_score": cls_score[0],
                       "stage/roi/s1/bbox_pred": bbox_pred[0]})
    if "mask" in model.model_config:  # the mask head on the reference detections: its detected class's logits
        feats = model.mask_roi_align(pyramid, tf.constant(arrays["stage/det/boxes"][None]))
        logits = tf.gather(model.mask_head(feats)[0], arrays["stage/det/labels"], axis=-1, batch_dims=1)
        stages.update({"stage/mask/feats": feats[0], "stage/mask/s1/logits": logits})
    assert len(stages) >= 14
    assert_stages(arrays, stages)


@pytest.mark.parametrize("name", [c for c in CASES if not c.values[0].startswith("rpn")])
def test_detections_equal_mmdetection(name):
    meta, arrays, _, _, _, _, out = converted(name)
    count = int(out["num_detections"][0])
    assert count == len(arrays["stage/det/boxes"]) == meta["num_detections"]
    mmdet_fixture.assert_same_set(out["detection_boxes"][0, :count], out["detection_scores"][0, :count],
                                  arrays["stage/det/boxes"], arrays["stage/det/scores"])
    np.testing.assert_array_equal(out["detection_classes"][0, :count], arrays["stage/det/labels"])


def mask_agreement(masks, boxes, model, stored):
    """(per-mask IoU, per-mask count of differing pixels) of [N, M, M] probabilities pasted in [N, 4] boxes
    (the converted config's threshold and rule) against the stored binary masks [N, H, W]."""
    mask = model.model_config.mask
    pasted = paste_masks(tf.convert_to_tensor(masks)[None], tf.convert_to_tensor(boxes)[None], stored.shape[1:],
                         threshold=mask.threshold, rule=mask.paste)[0].numpy().astype(bool)
    return mmdet_fixture.mask_ious(pasted, stored), (pasted ^ stored).sum((1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_r50_fpn", "mask_rcnn_r50_mdconv_c3-c5_fpn"])
def test_masks_equal_mmdetection(name):
    """Masks pasted at the image size (scale factor 1). On the reference detections the converted mask branch
    gives masks with IoU >= 0.99 (here: identical); on tfdet's own detections too, but where a box edge
    moved by float noise (boxes within 1e-3 px) flips one boundary pixel: a 44-pixel mask then has IoU 0.977."""
    meta, arrays, _, model, images, sizes, out = converted(name)
    count = int(out["num_detections"][0])
    stored = mmdet_fixture.det_masks(meta, arrays)[:count]
    assert stored.sum() > 0
    boxes, labels_ = arrays["stage/det/boxes"], arrays["stage/det/labels"]
    feats = model.mask_roi_align(model.features(images, image_sizes=sizes), tf.constant(boxes[None]))
    probs = tf.sigmoid(tf.gather(model.mask_head(feats)[0], labels_, axis=-1, batch_dims=1))
    iou, _ = mask_agreement(probs, boxes, model, stored)
    assert iou.min() >= 0.99, np.sort(iou)[:5]
    rows = np.concatenate([out["detection_boxes"][0, :count], out["detection_scores"][0, :count, None]], 1)
    index = fixtures_io.match_rows(rows, np.concatenate([boxes, arrays["stage/det/scores"][:, None]], 1),
                                   [1e-2] * 4 + [1e-4])
    assert (index >= 0).all()
    iou, flipped = mask_agreement(tf.gather(out["detection_masks"][0], index),
                                  tf.gather(out["detection_boxes"][0], index), model, stored)
    assert ((iou >= 0.99) | (flipped <= 1)).all(), (np.sort(iou)[:5], flipped.max())
    assert np.median(iou) == 1.0


@pytest.mark.slow
def test_rpn_proposals_are_the_detectors_outputs():
    """The RPN detector outputs its proposals (mmdet's RPN predict, scale factor 1)."""
    _, arrays, _, _, _, _, out = converted("rpn_r50_fpn")
    count = int(out["num_detections"][0])
    mmdet_fixture.assert_same_set(out["detection_boxes"][0, :count], out["detection_scores"][0, :count],
                                  arrays["stage/proposals/boxes"], arrays["stage/proposals/scores"])
