"""Guided Anchoring in the detectors (and the RPN detector): GA-RPN, GA-Faster R-CNN and GA-RetinaNet
built from their tiny configs through build_detector train on the fixed tiny batch of test_detectors
(losses finite, gradients into every head, losses falling), infer padded outputs (also with unknown
image sizes), serialize; the RPN detector's outputs give proposal recall through the evaluation CLI."""

import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests.data.coco_files import TINY_SHAPES
from tests.modeling.test_detectors import B, check_detections, check_round_trip, checked_losses_and_gradients
from tests.modeling.test_detectors import config, make_batch, train_on_fixed_batch
from tests.modeling.test_detectors import trained_model_for as detectors_trained_model_for
from tfdet.data import shapes
from tfdet.evaluation import loaders, runner
from tfdet.layers.deform_conv import DeformConv2D
from tfdet.modeling import dense_heads
from tfdet.modeling.dense_heads.ga_head import GARPNHead
from tfdet.modeling.dense_heads.ga_retina_head import GARetinaHead
from tfdet.modeling.dense_heads.retina_head import RetinaHead
from tfdet.modeling.dense_heads.rpn import RPNHead
from tfdet.modeling.detectors import DETECTORS, RPN, FasterRCNN, RetinaNet, build_detector

GA = ["ga_rpn", "ga_faster_rcnn", "ga_retinanet"]
FAMILIES = GA + ["rpn"]
TYPES = {"ga_rpn": (RPN, GARPNHead), "ga_faster_rcnn": (FasterRCNN, GARPNHead),
         "ga_retinanet": (RetinaNet, GARetinaHead), "rpn": (RPN, RPNHead)}
GA_LOSSES = {"loss_loc", "loss_shape"}
LOSSES = {"ga_rpn": GA_LOSSES | {"rpn_cls", "rpn_box"}, "rpn": {"rpn_cls", "rpn_box"},
          "ga_faster_rcnn": GA_LOSSES | {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"},
          "ga_retinanet": GA_LOSSES | {"retina_cls", "retina_box"}}


def trained_model_for(family):
    return detectors_trained_model_for(family, seed=11)


def model_for(family):
    return trained_model_for(family)[0]


def head_of(model):
    return model.head if isinstance(model, RetinaNet) else model.rpn_head


def max_detections(family):
    m = config(family).model
    if family == "ga_retinanet":
        return m.retina.max_detections
    return m.roi.max_detections if family == "ga_faster_rcnn" else m.rpn.max_proposals_test


def check_proposals(out, max_props, sizes=((64, 96), (64, 80))):
    """The RPN detector's outputs: valid proposals first, class 0, objectness in (0, 1], sorted; padding zero."""
    n = out["num_detections"].numpy()
    boxes, scores, classes = (out[k].numpy() for k in ("detection_boxes", "detection_scores", "detection_classes"))
    assert boxes.shape == (B, max_props, 4) and scores.shape == classes.shape == (B, max_props)
    for b in range(B):
        k = n[b]
        assert k > 0 and (classes[b, :k] == 0).all() and (classes[b, k:] == -1).all()
        assert (boxes[b, k:] == 0).all() and (scores[b, k:] == 0).all()
        assert (scores[b, :k] > 0).all() and (scores[b, :k] <= 1).all() and (np.diff(scores[b, :k]) <= 1e-6).all()
        x1, y1, x2, y2 = boxes[b, :k].T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= sizes[b][1]).all() and (y2 <= sizes[b][0]).all()
        assert (x2 >= x1).all() and (y2 >= y1).all()


def check_outputs(out, family):
    if family in ("ga_rpn", "rpn"):
        check_proposals(out, max_detections(family))
    else:
        m = config(family).model
        head = m.retina if family == "ga_retinanet" else m.roi
        check_detections(out, family, m.num_classes, max_detections(family), head.score_threshold)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_config_builds_the_head_its_type_names(family):
    cfg = config(family).model
    model = build_detector(cfg)
    detector, head = TYPES[family]
    assert DETECTORS[cfg.type] is type(model) is detector and type(head_of(model)) is head
    model.build()
    assert model.built and head_of(model).built and model.count_params() > 0


def test_head_type_defaults_and_errors():
    cfg = config("retinanet").model
    assert "type" not in cfg.retina and type(build_detector(cfg).head) is RetinaHead
    assert "type" not in config("faster_rcnn").model.rpn
    bad = config("ga_rpn").model
    bad.rpn.type = "Guided"
    with pytest.raises(ValueError, match="model.rpn.type.*'Guided'"):
        build_detector(bad)
    with pytest.raises(ValueError, match="model.retina.type"):
        dense_heads.build_retina({"type": "GA"}, 3)


def test_specs_read_every_setting_of_their_block():
    rpn = config("ga_rpn").model.rpn
    for key, value in dict(loc_threshold=0.2, center_ratio=0.3, ignore_ratio=0.6, loc_focal_alpha=0.3,
                           loc_focal_gamma=1.5, loc_negative_weight=0.2, shape_beta=0.3, shape_pos_iou=0.6,
                           shape_samples=64, shape_positive_fraction=0.25, anchor_stds=(0.1, 0.1, 0.2, 0.2)).items():
        rpn[key] = value
    a = dense_heads.build_rpn(rpn).anchors
    assert (a.loc_threshold, a.center_ratio, a.ignore_ratio, a.loc_alpha, a.loc_gamma, a.loc_negative_weight,
            a.shape_beta, a.shape_matcher.pos_iou_thr, a.shape_samples, a.shape_positive_fraction) == \
        (0.2, 0.3, 0.6, 0.3, 1.5, 0.2, 0.3, 0.6, 64, 0.25)
    assert a.anchor_stds == (0.1, 0.1, 0.2, 0.2) and a.strides == (4, 8, 16, 32, 64)
    retina = dense_heads.build_retina(config("ga_retinanet").model.retina, 3)
    assert retina.anchors.strides == (8, 16, 32, 64, 128) and retina.anchors.octave_base_scale == 4
    assert (retina.anchors.shape_matcher.pos_iou_thr, retina.anchors.shape_matcher.neg_range[1]) == (0.5, 0.4)
    assert (retina.matcher.pos_iou_thr, retina.matcher.neg_range[1], retina.matcher.min_pos_iou) == (0.5, 0.5, 0.0)


@pytest.mark.parametrize("family", GA)
def test_train_step_and_inference(family):
    model, trainer = trained_model_for(family)
    batch = make_batch()
    losses, grads = checked_losses_and_gradients(model, batch)
    assert set(losses) == LOSSES[family]
    # the feature adaption's offset conv learns (through the deformable conv), its input is stopped
    offset_grads = [g for path, g in grads.items() if "conv_offset" in path]
    assert offset_grads and all(float(tf.reduce_max(tf.abs(g))) > 0 for g in offset_grads)
    out = trainer.train_step(make_batch(empty=True))  # a whole Keras train step on images without objects
    assert all(np.isfinite(float(v)) for v in out.values()), out
    check_outputs(model.predict_step(batch), family)
    # unknown image sizes (the evaluation's retracing predict function)
    dynamic = tf.function(model.detect, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                                         tf.TensorSpec([None, 2], tf.float32)])
    want = model.predict_step(batch)
    got = dynamic(batch["images"], batch["image_info"][:, 2])
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-3)


def test_sparse_anchors_at_inference_only():
    """GA-RPN inference proposals come from the sparse anchors; training proposals from every location."""
    model = model_for("ga_rpn")
    batch = make_batch()
    features = model.features(batch["images"])
    outputs = model.rpn_head([features[lvl] for lvl in model.rpn.block.levels])
    outputs["loc"] = [tf.fill(tf.shape(l), -20.0) for l in outputs["loc"]]  # every location below 0.01
    sizes = batch["image_info"][:, 2]
    assert int(tf.reduce_sum(tf.cast(model.rpn.proposals(outputs, sizes).valid, tf.int32))) == 0
    train = model.rpn.proposals(outputs, sizes, training=True)
    assert train.valid.shape == (B, config("ga_rpn").model.rpn.max_proposals_train)
    assert train.valid.numpy().sum(1).min() > 10
    # with the test-time top-k, training proposals equal inference proposals with every location kept
    test_settings = {k: v for k, v in config("ga_rpn").model.rpn.items()}
    test_settings.update(pre_nms_top_k_train=test_settings["pre_nms_top_k_test"],
                         max_proposals_train=test_settings["max_proposals_test"])
    spec = dense_heads.build_rpn(ml_collections.ConfigDict(test_settings))
    train = spec.proposals(outputs, sizes, training=True)
    outputs["loc"] = [tf.fill(tf.shape(l), 20.0) for l in outputs["loc"]]
    for a, b in zip(train, model.rpn.proposals(outputs, sizes)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("family", GA)
def test_losses_fall_on_a_fixed_batch(family):
    # Adam 5e-4: at 1e-3 the tiny GA-RetinaNet's class tower can blow up once (the location loss of a few
    # positive cells on a small image dominates early) and then stall.
    model, history = train_on_fixed_batch(config(family).model, 12, 5e-4, 30)
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert history["loss"][-5:].mean() < 0.5 * history["loss"][:3].mean(), history["loss"]
    assert history["loss_loc"][-5:].mean() < 0.5 * history["loss_loc"][:3].mean(), history["loss_loc"]
    # the shape loss (small here, and its sampled targets change) is learnt in test_ga_head; it must not diverge
    assert history["loss_shape"][-5:].mean() < 1.2 * history["loss_shape"][:3].mean(), history["loss_shape"]
    check_outputs(model.predict_step(make_batch()), family)


@pytest.mark.parametrize("family", GA)
def test_serialization_round_trip(family, tmp_path):
    loaded = check_round_trip(model_for(family), make_batch(), tmp_path)
    assert type(head_of(loaded)) is TYPES[family][1]


def test_rpn_detector_proposal_recall_through_the_evaluation_cli(tmp_path):
    """The RPN detector's padded outputs go through the evaluation CLI's model path to proposal AR
    (class-agnostic COCOeval), one result per valid proposal."""
    shapes_val = shapes.ensure_shapes(str(tmp_path / "shapes"), **TINY_SHAPES)["val"]
    model = model_for("ga_rpn")
    output = str(tmp_path / "proposals.json")
    s = runner.EvalSettings(annotations=shapes_val.ann_file, images=shapes_val.image_dir, output=output,
                         eval_types=("proposal",), scale=(128, 128), batch_size=2)
    report = runner.run(s, loaders.keras_predict_fn(model), print_fn=lambda line: None)
    metrics = report["proposal"]["metrics"]
    assert list(metrics) == ["AR@100", "AR@300", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]
    assert all(-1 <= v <= 1 for v in metrics.values())
    results = json.load(open(output))
    images = {r["image_id"] for r in results}
    assert len(images) == 3 and len(results) <= 3 * max_detections("ga_rpn")
    assert len({r["category_id"] for r in results}) == 1


@pytest.mark.parametrize("family", ["ga_rpn", "ga_retinanet"])
def test_ops_impl_reaches_the_feature_adaption(family):
    """model.ops_impl = "composite" (SavedModel export for stock TF Serving) reaches every deformable conv,
    and the composite model computes what the default one does with the same weights."""
    cfg = config(family).model
    cfg.ops_impl = "composite"
    model = build_detector(cfg)
    model.build()
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, DeformConv2D)]
    assert convs and all(layer.impl == "composite" for layer in convs)
    reference = model_for(family)
    model.set_weights(reference.get_weights())
    batch = make_batch()
    want, got = reference.predict_step(batch), model.predict_step(batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_ga_rpn_exports_with_stock_ops_only(tmp_path):
    from tfdet.serving import ServingModule, export
    from tfdet.serving.graph_ops import saved_model_op_types

    cfg = config("ga_rpn").model
    cfg.ops_impl = "composite"
    model = build_detector(cfg)
    model.build()
    model.set_weights(model_for("ga_rpn").get_weights())
    module = ServingModule(model, scale=(96, 64), category_ids=[1, 2, 3])
    path = export(module, str(tmp_path), version=1, with_warmup=False)
    ops = saved_model_op_types(path)
    assert "NonMaxSuppressionV4" in ops and not [op for op in ops if op.startswith("Tfdet")]
    images = tf.constant(np.random.default_rng(5).uniform(0, 255, (1, 60, 90, 3)).astype(np.uint8))
    out = tf.saved_model.load(path).signatures["image_tensor"](images=images)
    n = int(out["num_detections"][0])
    assert n > 0 and out["detection_boxes"].shape[1] == cfg.rpn.max_proposals_test
