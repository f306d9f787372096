"""Cascade R-CNN, Cascade Mask R-CNN, HTC: per-stage assignment on refined boxes, gradient stopping,
mask information flow, the semantic branch, train steps, inference, configs and serialization."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.dense_heads.rpn import Proposals
from tfdet.engine import Trainer
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.roi_heads import bbox_head, htc_heads, mask_head
from tfdet.ops import box_ops
from tfdet.ops.roi_align import roi_align

from tests.modeling.test_detectors import B, H, W, check_detections, config, make_batch, model_for

FAMILIES = {"cascade_rcnn": "CascadeRCNN", "cascade_mask_rcnn": "CascadeMaskRCNN", "htc": "HybridTaskCascade"}

def batch_with_semantic():
    batch = make_batch()
    labels = np.random.default_rng(3).integers(0, 4, (B, H // 8, W // 8)).astype(np.uint8)
    labels[:, 0] = 255
    batch["semantic"] = tf.constant(labels)
    return batch


def iou_np(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def jittered_proposals(batch, n=48, seed=0):
    rng = np.random.default_rng(seed)
    gt = batch["gt_boxes"].numpy()[0, :2]
    boxes = np.concatenate([gt[rng.integers(0, 2, n)] + rng.normal(0, 6, (n, 4))]).clip(0, 90).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
    boxes = np.stack([boxes, boxes])
    return Proposals(boxes=tf.constant(boxes), scores=tf.ones([B, n]), valid=tf.ones([B, n], tf.bool))


def test_stage_assignment_uses_refined_boxes_and_stage_ious():
    model = model_for("cascade_rcnn")
    batch = make_batch()
    features = model.features(batch["images"])
    stages = model.roi_head.stage_targets(features, jittered_proposals(batch), batch)
    gt = batch["gt_boxes"].numpy()[0, :2]
    ious = [s["pos_iou"] for s in model.roi_head.stages]
    assert ious == [0.5, 0.6, 0.7]
    previous_pool = jittered_proposals(batch).boxes.numpy()[0]
    for t, (targets, _, _, refined) in enumerate(stages):
        valid = targets.valid.numpy()[0]
        rois, positive = targets.rois.numpy()[0][valid], targets.is_positive.numpy()[0][valid]
        best = iou_np(rois, gt).max(1)
        assert (best[positive] >= ious[t] - 1e-5).all() and (best[~positive] < ious[t] + 1e-5).all()
        # Every sampled RoI is a box of the previous stage's pool (refined boxes) or a ground-truth box.
        pool = np.concatenate([previous_pool, gt])
        distance = np.abs(rois[:, None] - pool[None]).max(-1).min(1)
        assert (distance < 1e-3).all(), t
        previous_pool = refined.numpy()[0][valid]
        if t > 0:  # the refined boxes really moved: stage t samples differ from raw proposals
            raw = np.concatenate([jittered_proposals(batch).boxes.numpy()[0], gt])
            assert (np.abs(rois[:, None] - raw[None]).max(-1).min(1) > 1e-4).any()
        # Box targets are encoded with this stage's stds.
        settings = model.roi_head.stages[t]
        want = box_ops.encode_boxes(tf.constant(gt[targets.matched_gt.numpy()[0][valid][positive]]),
                                              tf.constant(rois[positive]), stds=settings["bbox_stds"])
        np.testing.assert_allclose(targets.box_targets.numpy()[0][valid][positive], want, atol=1e-4)


def test_no_gradient_between_stages():
    model = model_for("cascade_rcnn")
    batch = make_batch()
    with tf.GradientTape(persistent=True) as tape:
        features = model.features(batch["images"])
        stages = model.roi_head.stage_targets(features, jittered_proposals(batch), batch)
        targets, cls_logits, deltas, _ = stages[1]
        stage2 = tf.add_n(list(bbox_head.bbox_losses(cls_logits, deltas, targets, model.num_classes).values()))
        refined = tf.reduce_sum(stages[0][3])
    assert all(g is None for g in tape.gradient(stage2, model.bbox_heads[0].trainable_variables))
    assert all(g is not None for g in tape.gradient(stage2, model.bbox_heads[1].trainable_variables))
    assert tape.gradient(refined, deltas) is None


def test_mask_information_flow():
    model = model_for("htc")
    features = tf.random.stateless_normal([1, 3, 14, 14, 32], [1, 2])
    before = [model.roi_head.mask_logits(t, features).numpy() for t in range(2)]
    first = model.mask_heads[0].convs[-1]  # stage-1 mask features change
    saved = [w.numpy() for w in first.weights]
    first.kernel.assign(first.kernel * 1.5)
    after = [model.roi_head.mask_logits(t, features).numpy() for t in range(2)]
    for w, v in zip(first.weights, saved):
        w.assign(v)
    assert np.abs(after[1] - before[1]).max() > 1e-4  # stage 2 sees stage 1's features
    second = model.mask_heads[1].convs[-1]
    saved = [w.numpy() for w in second.weights]
    second.kernel.assign(second.kernel * 1.5)
    stage1 = model.roi_head.mask_logits(0, features).numpy()
    for w, v in zip(second.weights, saved):
        w.assign(v)
    np.testing.assert_array_equal(stage1, before[0])  # and not the other way
    assert model.mask_heads[1].flow is not None and model.mask_heads[0].flow is None


def test_semantic_head_stride_and_loss_with_ignore_labels():
    head = htc_heads.SemanticHead(5, levels=(2, 3, 4, 5, 6), fusion_level=3, num_convs=4, channels=8)
    features = {lvl: tf.random.stateless_normal([2, 128 // 2 ** lvl, 192 // 2 ** lvl, 8], [lvl, 0])
                for lvl in range(2, 7)}
    logits, embedded = head(features)
    assert logits.shape == (2, 16, 24, 5) and embedded.shape == (2, 16, 24, 8)  # stride 8
    assert len(head.convs) == 4
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 128, 192)).astype(np.uint8)
    labels[:, :64] = 255
    got = float(htc_heads.semantic_loss(logits, labels, weight=0.2))
    small = labels[:, 4::8, 4::8]  # nearest at stride 8 picks each cell's centre pixel (as tfdet.data.pipeline)
    z = logits.numpy().astype(np.float64)
    logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    keep = small != 255
    want = 0.2 * -np.take_along_axis(logp, np.where(keep, small, 0)[..., None].astype(int), -1)[..., 0][keep].mean()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    all_ignored = float(htc_heads.semantic_loss(logits, np.full((2, 128, 192), 255, np.uint8)))
    assert all_ignored == 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_train_step_and_inference(family):
    model = model_for(family)
    batch = batch_with_semantic()
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses = model.compute_losses(batch, training=True)
        total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, variables)
    stage_keys = {"rcnn_cls", "rcnn_box"} | ({"mask"} if family != "cascade_rcnn" else set())
    expected = {"rpn_cls", "rpn_box"} | {f"s{t}_{k}" for t in (1, 2, 3) for k in stage_keys}
    assert set(losses) == expected | ({"semantic"} if family == "htc" else set())
    assert all(np.isfinite(float(v)) for v in losses.values()), losses
    missing = [v.path for v, g in zip(variables, grads) if g is None]
    assert not missing, missing
    cfg = config(family).model
    out = model.predict_step(batch)
    check_detections(out, "faster_rcnn" if family == "cascade_rcnn" else "mask_rcnn", cfg.num_classes,
                     cfg.roi.max_detections)
    if family != "cascade_rcnn":
        masks = out["detection_masks"].numpy()
        assert masks.shape == (B, cfg.roi.max_detections, 28, 28) and (masks >= 0).all() and (masks <= 1).all()


def test_htc_without_semantic_branch():
    cfg = config("htc", "tiny,semantic=False")
    assert cfg.model.htc.semantic is False and not cfg.data.with_semantic
    keras.utils.set_random_seed(1)
    model = build_detector(cfg.model)
    batch = make_batch()  # no "semantic" key
    losses = model.compute_losses(batch)
    assert "semantic" not in losses and all(np.isfinite(float(v)) for v in losses.values())
    assert not any("semantic" in v.path for v in model.weights)
    with pytest.raises(ValueError, match="semantic=False|semantic = False"):
        model_for("htc").compute_losses(make_batch())


@pytest.mark.parametrize("family", FAMILIES)
def test_serialization_round_trip(family, tmp_path):
    model = model_for(family)
    batch = make_batch()
    want = model.predict_step(batch)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert json.dumps(loaded.get_config()["config"], sort_keys=True) == \
        json.dumps(model.get_config()["config"], sort_keys=True)
    got = loaded.predict_step(batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_on_a_fixed_batch(family):
    keras.utils.set_random_seed(2)
    model = build_detector(config(family).model)
    trainer = Trainer(model, optimizer=keras.optimizers.Adam(1e-3))
    batch = batch_with_semantic()
    step = tf.function(trainer.train_step)
    history = [float(step(batch)["loss"]) for _ in range(30)]
    assert np.isfinite(history).all()
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:3]), history


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backbone,dcn,carafe", [("r50", False, False), ("r101", True, False), ("x101", True, True),
                                                 ("fishnet99", False, True)])
def test_configs(family, backbone, dcn, carafe):
    arg = ",".join([f"backbone={backbone}"] + (["dcn"] if dcn else []) + (["carafe"] if carafe else []))
    cfg = config(family, arg)
    m = cfg.model
    assert m.type == FAMILIES[family] and m.roi.class_agnostic is True
    stages = [dict(s) for s in m.cascade.stages]
    assert [s["pos_iou"] for s in stages] == [0.5, 0.6, 0.7]
    assert [tuple(s["bbox_stds"]) for s in stages] == [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                                                        (0.033, 0.033, 0.067, 0.067)]
    assert [s["loss_weight"] for s in stages] == [1.0, 0.5, 0.25]
    assert tuple(m.backbone.get("stage_with_dcn", (False,) * 4)) == ((False, True, True, True) if dcn else (False,) * 4)
    assert m.neck.upsample == ("carafe" if carafe else "nearest")
    if family != "cascade_rcnn":
        assert m.mask.upsample == ("carafe" if carafe else "deconv") and cfg.data.mask_size == 112
    if family == "htc":
        h = m.htc
        assert (h.semantic, h.semantic_classes, h.fusion_level, h.semantic_convs, h.semantic_loss_weight) == \
            (True, 183, 3, 4, 0.2) and cfg.data.with_semantic
    with pytest.raises(ValueError, match="unknown option 'semantic'"):
        config("cascade_rcnn", "semantic=False")
    assert cfg.train.base_lr == 0.02 and tuple(cfg.data.scale) == (1333, 800)


@pytest.mark.parametrize("impl", ["composite", "fused"])
def test_mask_targets_ignore_rois_without_gt(impl):
    """RoIs without a matched gt next to zero-size padding gt boxes (box-cropped layout) give zero
    targets, without mapping them to huge crop coordinates (the composite RoIAlign used to OOM)."""
    from tfdet.modeling.roi_heads import mask_head
    gt_masks = tf.ones([1, 2, 28, 28], tf.uint8)
    gt_boxes = tf.constant([[[0.0, 0.0, 0.0, 0.0], [10.0, 10.0, 40.0, 40.0]]])  # gt 0 is padding
    rois = tf.constant([[[10.0, 10.0, 40.0, 40.0], [5.0, 5.0, 60.0, 60.0]]])
    targets = mask_head.mask_targets(gt_masks, rois, tf.constant([[1, -1]]), 28, gt_boxes=gt_boxes, impl=impl)
    assert targets.shape == (1, 2, 28, 28)
    assert float(tf.reduce_min(targets[0, 0])) == 1.0 and float(tf.reduce_max(targets[0, 1])) == 0.0


# mmdetection's HTC arithmetic (model.htc options; tools/zoo_reference/mmdet_conventions.md 2.7, 2.11) -------------
def htc_model(seed=1, **htc):
    cfg = config("htc")
    cfg.model.htc.update(htc)
    keras.utils.set_random_seed(seed)
    model = build_detector(cfg.model)
    model.build()
    return model


def resize_align_corners_np(x, size):
    """torch F.interpolate(mode="bilinear", align_corners=True) of NHWC x: output pixel i reads input
    coordinate i * (in - 1) / (out - 1)."""
    def axis(n_in, n_out):
        u = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        low = np.minimum(np.floor(u).astype(int), n_in - 1)
        high, frac = np.minimum(low + 1, n_in - 1), u - low
        return low, high, frac
    (y0, y1, fy), (x0, x1, fx) = axis(x.shape[1], size[0]), axis(x.shape[2], size[1])
    rows = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


@pytest.mark.parametrize("fusion", ["conv_then_resize", "resize_then_conv"])
def test_semantic_head_fusion_orders(fusion):
    head = htc_heads.SemanticHead(5, levels=(2, 3, 4, 5, 6), fusion_level=3, num_convs=1, channels=6, fusion=fusion)
    sizes = {2: (26, 34), 3: (13, 17), 4: (7, 9), 5: (4, 5), 6: (2, 3)}
    features = {lvl: tf.random.stateless_normal([1, *hw, 6], [lvl, 1]) for lvl, hw in sizes.items()}
    head(features)
    rng = np.random.default_rng(4)
    for w in head.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.3)
    logits, embedded = head(features)

    def lateral(lvl, x):
        kernel, bias = head.laterals[lvl - 2].get_weights()
        return np.maximum(x @ kernel[0, 0] + bias, 0)

    fused = lateral(3, features[3].numpy())
    for lvl in (2, 4, 5, 6):
        x = features[lvl].numpy().astype(np.float64)
        if fusion == "resize_then_conv":  # mmdetection FusedSemanticHead
            fused = fused + lateral(lvl, resize_align_corners_np(x, sizes[3]))
        else:
            fused = fused + tf.image.resize(lateral(lvl, x), sizes[3], method="bilinear").numpy()
    kernel, bias = head.convs[0].get_weights()
    x = np.maximum(tf.nn.conv2d(fused.astype("float32"), kernel, 1, "SAME").numpy() + bias, 0)
    kernel, bias = head.embedding.get_weights()
    np.testing.assert_allclose(embedded.numpy(), np.maximum(x @ kernel[0, 0] + bias, 0), rtol=1e-4, atol=1e-4)
    kernel, bias = head.classifier.get_weights()
    np.testing.assert_allclose(logits.numpy(), x @ kernel[0, 0] + bias, rtol=1e-4, atol=1e-4)
    clone = htc_heads.SemanticHead.from_config(head.get_config())
    assert clone.fusion == fusion
    clone(features)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(clone(features)[0].numpy(), logits.numpy())


def test_semantic_fusion_orders_differ():
    heads = [htc_heads.SemanticHead(3, levels=(2, 3, 4), fusion_level=3, channels=4, fusion=f)
             for f in htc_heads.FUSIONS]
    features = {lvl: tf.random.stateless_normal([1, 32 // 2 ** (lvl - 2), 48 // 2 ** (lvl - 2), 4], [lvl, 2])
                for lvl in (2, 3, 4)}
    heads[0](features)
    heads[1](features)
    heads[1].set_weights(heads[0].get_weights())
    assert np.abs(heads[0](features)[0].numpy() - heads[1](features)[0].numpy()).max() > 1e-3


@pytest.mark.parametrize("activation", [None, "relu"])
def test_mask_flow_activation(activation):
    head = htc_heads.HTCMaskHead(3, num_convs=2, channels=8, with_flow=True, flow_activation=activation)
    plain = htc_heads.HTCMaskHead(3, num_convs=2, channels=8)  # the same head without the flow conv
    roi = tf.random.stateless_normal([1, 4, 14, 14, 8], [1, 3])
    previous = tf.random.stateless_normal([1, 4, 14, 14, 8], [2, 3])
    head(roi, previous)
    plain(roi)
    for mine, other in zip(plain.convs + [plain.upsampler, plain.logits], head.convs + [head.upsampler, head.logits]):
        mine.set_weights(other.get_weights())
    kernel, bias = head.flow.get_weights()
    flow = previous.numpy() @ kernel[0, 0] + bias
    assert (flow < 0).any()
    flow = np.maximum(flow, 0) if activation == "relu" else flow
    want_logits, want_features = plain(roi + flow)
    logits, features = head(roi, previous)
    np.testing.assert_allclose(logits.numpy(), want_logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features.numpy(), want_features.numpy(), rtol=1e-5, atol=1e-5)
    clone = htc_heads.HTCMaskHead.from_config(head.get_config())
    assert clone.flow_activation == activation
    with pytest.raises(ValueError, match="flow_activation"):
        htc_heads.HTCMaskHead(3, with_flow=True, flow_activation="gelu")


def test_semantic_pool_14_avg():
    model = htc_model(semantic_pool="14_avg")
    head = model.roi_head
    images = make_batch()["images"]
    features = model.features(images)
    _, semantic = head._semantic(features)
    rois = jittered_proposals(make_batch()).boxes
    got = head._pool("box", features, rois, semantic) - head.box_roi_align(features, rois)
    n = rois.shape[0] * rois.shape[1]
    pooled = roi_align(semantic, tf.reshape(rois, [-1, 4]), tf.repeat(tf.range(rois.shape[0]), rois.shape[1]), 14,
                       spatial_scale=1 / 8, sampling_ratio=0, aligned=True).numpy()  # [n, 14, 14, C]
    want = pooled.reshape(n, 7, 2, 7, 2, -1).mean(axis=(2, 4)).reshape(got.shape)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    direct = htc_model(semantic_pool="direct").roi_head
    assert direct.semantic_box_roi_align.output_size == (7, 7) and head.semantic_box_roi_align.output_size == (14, 14)
    # The mask branch pools at its own 14x14 either way.
    assert head.semantic_mask_roi_align.output_size == (14, 14)


@pytest.mark.parametrize("mask_test", ["last", "mean"])
def test_htc_mask_test(mask_test):
    model = htc_model(mask_test=mask_test, flow_activation="relu")
    batch = make_batch()
    out = model.predict_step(batch)
    head = model.roi_head
    features = model.features(batch["images"])
    pooled = head._pool("mask", features, out["detection_boxes"], head._semantic(features)[1])
    probs = [mask_head.mask_probabilities(logits, out["detection_classes"]).numpy()
             for logits in head.stage_mask_logits(pooled)]
    assert len(probs) == 3
    np.testing.assert_allclose(head.mask_logits(2, pooled).numpy(), head.stage_mask_logits(pooled)[-1].numpy())
    want = probs[-1] if mask_test == "last" else np.mean(probs, axis=0)
    np.testing.assert_allclose(out["detection_masks"].numpy(), want, rtol=1e-5, atol=1e-6)
    assert np.abs(np.mean(probs, axis=0) - probs[-1]).max() > 1e-4  # the two rules differ on this model


@pytest.mark.parametrize("field,value", [("semantic_fusion", "resize"), ("semantic_pool", "7_avg"),
                                         ("flow_activation", "sigmoid"), ("mask_test", "first")])
def test_htc_options_are_checked(field, value):
    cfg = config("htc")
    cfg.model.htc[field] = value
    with pytest.raises(ValueError, match=f"model.htc.{field} must be one of"):
        build_detector(cfg.model)


def test_htc_14_avg_needs_a_7x7_box_branch():
    cfg = config("htc")
    cfg.model.htc.semantic_pool = "14_avg"
    cfg.model.roi.pooled_size = 6
    with pytest.raises(ValueError, match="pooled_size 7"):
        build_detector(cfg.model)


def test_htc_mmdet_options_round_trip(tmp_path):
    model = htc_model(semantic_fusion="resize_then_conv", semantic_pool="14_avg", flow_activation="relu",
                      mask_test="mean")
    assert model.semantic_head.fusion == "resize_then_conv" and model.mask_heads[1].flow_activation == "relu"
    batch = make_batch()
    want = model.predict_step(batch)
    model.save(str(tmp_path / "model.keras"))
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    assert dict(loaded.model_config.htc) == dict(model.model_config.htc)
    got = loaded.predict_step(batch)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
