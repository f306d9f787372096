"""mmdetection Cascade R-CNN, Cascade Mask R-CNN, HTC (semantic head included) and the CARAFE variants of
Faster / Mask R-CNN (FPN_CARAFE, CARAFE mask head) converted by tfdet.zoo.mmdet and run by tfdet's detector,
built from the written config, against the reference fixtures: test_mmdet_convert_models.py's checkpoints
(2.x and 3.x layouts, the same keys) and conversion. A 3.x checkpoint converts to the 2.x one's spec and
weights, so one model serves both; but for HTC, whose test-time mask rule follows the mmdet version that
wrote the file (2.x: the mean of the stages' masks; 3.x: the last stage's), the 3.x file gets its own model.

Compared within 1e-4 of each stage's largest value: FPN (FPN_CARAFE's P6 included), RPN head; proposals as
a set; per box stage the RoI features (HTC: with the semantic features, 14x14 averaged to 7x7), logits and
deltas on the reference's RoIs of that stage, and the RoIs refined for the next stage; HTC's semantic logits
and features and its pooled semantic features; the mask heads' input and every stage's mask logits on the
reference detections (HTC: in sequence, with the flow). Detections as sets; pasted masks IoU >= 0.99 where
the reference's mask rule is the converted one (Cascade Mask R-CNN: the mean of the stages; HTC from a 3.x
file: the last stage, as mmdet 3.3); HTC from a 2.x file: the masks are the mean of the stages' (each
compared above)."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io, mmdet_fixture
from tests.zoo.test_mmdet_convert_models import (assert_same_conversion, assert_stages, checkpoint, conversion,
                                                  converted)
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.roi_heads import mask_head
from tfdet.modeling.roi_heads.cascade import refine_boxes
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.zoo import mmdet
from tfdet.zoo.files import load_weights

FIXTURES = ["cascade_rcnn_r50_fpn", "cascade_mask_rcnn_r50_fpn", "htc_r50_fpn", "faster_rcnn_r50_fpn_carafe",
            "mask_rcnn_r50_fpn_carafe"]
HTC = "htc_r50_fpn"
STAGE_CASES = [pytest.param(name, marks=() if name == HTC else pytest.mark.slow) for name in FIXTURES]
DETECTION_CASES = [pytest.param(name, "mmdet2", marks=pytest.mark.slow) for name in FIXTURES] + \
    [pytest.param(HTC, "mmdet3", marks=pytest.mark.slow)]


@functools.lru_cache(maxsize=None)
def converted_from(name, layout):
    """converted(name, layout); HTC's 3.x checkpoint gets a model of its own (its spec is the 2.x one's but
    for mmdet_version, checked; the same weights, checked)."""
    if name != HTC or layout == "mmdet2":
        return converted(name, layout)
    spec, weights = conversion(name, layout)
    spec2, weights2 = conversion(name, "mmdet2")
    assert spec["mmdet_version"] is None and spec2["mmdet_version"] == "2.25.0"
    assert {**spec, "mmdet_version": spec2["mmdet_version"]} == spec2 and sorted(weights) == sorted(weights2)
    for key, value in weights2.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    meta, arrays, _, _, images, sizes, _ = converted(name)
    model = build_detector(mmdet.tfdet_config(spec).model)
    load_weights(model, weights)
    return meta, arrays, spec, model, images, sizes, model.detect(images, sizes)


@pytest.mark.parametrize("name", [n for n in FIXTURES if n != HTC])
def test_both_layouts_convert_the_same(name):
    assert_same_conversion(name, "mmdet3")


def chosen(logits, labels):
    """[N, 28, 28] of each detection's class from [1, N, 28, 28, C] mask logits."""
    return np.take_along_axis(np.asarray(logits)[0], np.asarray(labels)[:, None, None, None], axis=-1)[..., 0]


def test_configs_say_what_mmdet_computes():
    """The written configs carry the converted test settings and options (no model built)."""
    for name, layout in [("htc_r50_fpn", "mmdet2"), ("htc_r50_fpn", "mmdet3")]:
        sd, meta = checkpoint(name, layout)
        spec = mmdet.describe(meta, state_dict=sd)
        model = mmdet.tfdet_config(spec).model
        assert spec["arch"] == name and spec["family"] == "htc"
        h = model.htc
        assert (h.semantic, h.semantic_classes, h.fusion_level, h.semantic_fusion, h.semantic_pool,
                h.flow_activation) == (True, 183, 3, "resize_then_conv", "14_avg", "relu")
        assert h.mask_test == ("mean" if layout == "mmdet2" else "last")
        assert model.roi.score_threshold == 0.001 and model.roi.class_agnostic
        assert [tuple(s["bbox_stds"]) for s in model.cascade.stages] == [
            (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    sd, meta = checkpoint("mask_rcnn_r50_fpn_carafe", "mmdet3")
    spec = mmdet.describe(meta, state_dict=sd)
    config = mmdet.tfdet_config(spec)
    assert spec["arch"] == "mask_rcnn_r50_fpn_carafe" and config.data.pad_to_multiple == 64
    assert (config.model.neck.extra, config.model.neck.upsample, config.model.mask.upsample) == \
        ("carafe_lateral", "carafe", "carafe")
    assert mmdet.describe(arch="faster_rcnn_r50_fpn_carafe")["input"]["pad_size_divisor"] == 64
    for zoo_name, arch in [("cascade_rcnn_r50_fpn_1x_coco", "cascade_rcnn_r50_fpn"),  # 2.x file / 3.x config names
                           ("cascade-mask-rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn"),
                           ("htc_r50_fpn_1x_coco", "htc_r50_fpn"),
                           ("faster-rcnn_r50_fpn-carafe_1x_coco", "faster_rcnn_r50_fpn_carafe"),
                           ("mask_rcnn_r50_fpn_carafe_1x_coco", "mask_rcnn_r50_fpn_carafe")]:
        assert mmdet.describe(arch=zoo_name)["arch"] == arch


@pytest.mark.parametrize("name", STAGE_CASES)
def test_stages_equal_mmdetection(name):
    meta, arrays, spec, model, images, sizes, _ = converted(name)
    assert spec["arch"] == name
    pyramid = model.features(images, image_sizes=sizes)
    levels = [int(lvl[1:]) for lvl in meta["levels"]]
    stages = {f"stage/neck/p{lvl}": pyramid[lvl] for lvl in levels}
    objectness, deltas = model.rpn_head([pyramid[lvl] for lvl in levels])
    for lvl, o, d in zip(levels, objectness, deltas):
        stages.update({f"stage/rpn/cls/p{lvl}": o, f"stage/rpn/reg/p{lvl}": d})
    proposals = model.rpn.proposals((objectness, deltas), sizes)
    count = int(tf.reduce_sum(tf.cast(proposals.valid, tf.int32)))
    mmdet_fixture.assert_same_set(proposals.boxes[0, :count], proposals.scores[0, :count],
                                  arrays["stage/proposals/boxes"], arrays["stage/proposals/scores"])
    head = model.roi_head
    cascade = meta["kind"] in ("cascade", "htc")
    semantic = None
    if meta["kind"] == "htc":
        logits, semantic = head._semantic(pyramid)  # pylint: disable=protected-access
        stages.update({"stage/semantic/logits": logits, "stage/semantic/feats": semantic,
                       "stage/roi/semantic_feats": head.semantic_box_roi_align(
                           {head.htc.fusion_level: semantic}, arrays["stage/proposals/boxes"][None])[0]})
    if cascade:
        pool = lambda branch, boxes: head._pool(branch, pyramid, boxes, semantic)  # noqa: E731  pylint: disable=protected-access
    else:
        pool = lambda branch, boxes: getattr(model, f"{branch}_roi_align")(pyramid, boxes)  # noqa: E731
    rois = arrays["stage/proposals/boxes"]
    for t in range(3 if cascade else 1):
        if t:
            refined = refine_boxes(cls_score, bbox_pred, rois[None], sizes, 80, head.stages[t - 1]["bbox_stds"])
            rois = arrays[f"stage/roi/s{t + 1}/rois"]  # the reference's from here on
            np.testing.assert_allclose(refined[0], rois, atol=1e-2, err_msg=f"stage {t + 1} RoIs")
        pooled = pool("box", tf.constant(rois[None]))
        cls_score, bbox_pred = (head.bbox_heads[t] if cascade else model.bbox_head)(pooled)
        stages.update({f"stage/roi/s{t + 1}/feats": pooled[0], f"stage/roi/s{t + 1}/cls_score": cls_score[0],
                       f"stage/roi/s{t + 1}/bbox_pred": bbox_pred[0]})
    if fixtures_io.has_stage(arrays, "stage/mask/feats"):
        boxes, labels = tf.constant(arrays["stage/det/boxes"][None]), arrays["stage/det/labels"]
        pooled = pool("mask", boxes)
        stages["stage/mask/feats"] = pooled[0]
        per_stage = head.stage_mask_logits(pooled) if cascade else [model.mask_head(pooled)]
        for t, logits in enumerate(per_stage):
            stages[f"stage/mask/s{t + 1}/logits"] = chosen(logits, labels)
        if fixtures_io.has_stage(arrays, "stage/mask/s1/logits_head"):
            stages["stage/mask/s1/logits_head"] = chosen(per_stage[0], labels)[:len(arrays["stage/mask/s1/logits_head"])]
    assert len(stages) >= 18
    assert_stages(arrays, stages)


@pytest.mark.parametrize("name, layout", DETECTION_CASES)
def test_detections_equal_mmdetection(name, layout):
    meta, arrays, _, model, images, sizes, out = converted_from(name, layout)
    count = int(out["num_detections"][0])
    assert count == len(arrays["stage/det/boxes"]) == meta["num_detections"]
    boxes, scores = out["detection_boxes"][0, :count], out["detection_scores"][0, :count]
    mmdet_fixture.assert_same_set(boxes, scores, arrays["stage/det/boxes"], arrays["stage/det/scores"])
    np.testing.assert_array_equal(out["detection_classes"][0, :count], arrays["stage/det/labels"])
    if "detection_masks" not in out:
        return
    masks = out["detection_masks"][:, :count]
    htc = getattr(model.roi_head, "htc", None)
    if htc is not None:
        assert htc.mask_test == ("mean" if layout == "mmdet2" else "last")
    if htc is not None and htc.mask_test == "mean":  # mmdet 2.x's rule: the reference (3.3) pastes the last stage's
        features = model.features(images, image_sizes=sizes)
        head = model.roi_head
        pooled = head._pool("mask", features, boxes[None], head._semantic(features)[1])  # pylint: disable=protected-access
        classes = out["detection_classes"][:, :count]
        probs = [mask_head.mask_probabilities(logits, classes) for logits in head.stage_mask_logits(pooled)]
        np.testing.assert_allclose(masks, tf.add_n(probs) / 3, atol=1e-6)
        return
    rows = np.concatenate([boxes, scores[:, None]], 1)
    index = fixtures_io.match_rows(rows, np.concatenate([arrays["stage/det/boxes"], arrays["stage/det/scores"][:, None]],
                                                        1), [1e-2] * 4 + [1e-4])
    assert (index >= 0).all()
    height, width = meta["mask_shape"][1:]
    pasted = paste_masks(tf.gather(masks[0], index)[None], tf.gather(boxes, index)[None], (height, width),
                         threshold=model.model_config.mask.threshold, rule=model.model_config.mask.paste)[0]
    expected = mmdet_fixture.det_masks(meta, arrays)
    ious = mmdet_fixture.mask_ious(pasted.numpy(), expected)
    assert expected.sum() > 0 and ious.min() >= 0.99, np.sort(ious)[:5]
