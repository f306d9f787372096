"""Guided Anchoring heads: serialization, feature adaption, sparse anchors, losses, proposals, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdet.modeling.dense_heads import ga_head
from tfdet.modeling.dense_heads.ga_head import FeatureAdaption, GAAnchors, GARPNHead
from tfdet.ops import box_ops
from tfdet.ops import guided_anchoring as ga
from tests.keras_io import assert_round_trip

ANCHORS = GAAnchors(strides=(4, 8), octave_base_scale=4)
SIZES = [(16, 16), (8, 8)]  # a 64 x 64 image


def features(rng, batch=2, channels=8):
    return [tf.constant(rng.normal(size=(batch, h, w, channels)), tf.float32) for h, w in SIZES]


def gt_batch():
    gt_boxes = np.array([[[8, 8, 30, 26], [34, 28, 60, 62], [0, 0, 0, 0]],
                         [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)  # image 1 has no objects
    gt_classes = np.array([[0, 3, -1], [-1, -1, -1]], np.int32)
    return gt_boxes, gt_classes


def test_head_shapes_and_serialization(tmp_path):
    head = GARPNHead(feat_channels=16)
    inputs = [keras.Input((h, w, 8)) for h, w in SIZES]
    model = keras.Model(inputs, head(inputs))
    feats = features(np.random.default_rng(40))
    out = model(feats)
    assert [o.shape for o in out["loc"]] == [(2, 16, 16, 1), (2, 8, 8, 1)]
    assert [o.shape for o in out["shape"]] == [(2, 16, 16, 2), (2, 8, 8, 2)]
    assert [o.shape for o in out["objectness"]] == [(2, 16, 16, 1), (2, 8, 8, 1)]
    assert [o.shape for o in out["deltas"]] == [(2, 16, 16, 4), (2, 8, 8, 4)]
    # location prior 0.01
    np.testing.assert_allclose(tf.sigmoid(out["loc"][0]).numpy().mean(), 0.01, rtol=0.2)
    clone = GARPNHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert_round_trip(model, feats, tmp_path, rtol=1e-5, atol=1e-7)


def test_feature_adaption_offsets_come_from_the_stopped_shape():
    rng = np.random.default_rng(41)
    layer = FeatureAdaption(8, deformable_groups=4)
    x = tf.constant(rng.normal(size=(1, 6, 6, 8)), tf.float32)
    shape = tf.Variable(rng.normal(size=(1, 6, 6, 2)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        y = layer(x, shape)
        total = tf.reduce_sum(y)
    assert y.shape == (1, 6, 6, 8)
    assert tape.gradient(total, shape) is None  # gradient-stopped, as in the paper
    assert tape.gradient(total, layer.conv_offset.kernel) is not None
    assert layer.conv_offset.kernel.shape == (1, 1, 2, 2 * 4 * 9)
    # zero offsets (zero shape) give a plain 3x3 conv with the same kernel, then ReLU
    assert layer.conv_adaption.bias is None
    plain = tf.nn.relu(tf.nn.conv2d(x, layer.conv_adaption.kernel, 1, "SAME"))
    np.testing.assert_allclose(layer(x, tf.zeros_like(shape)), plain, atol=1e-5)
    clone = FeatureAdaption.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_sparse_anchors_mask_and_static_shapes():
    loc = [tf.constant(np.full((2, h, w, 1), -10.0), tf.float32) for h, w in SIZES]
    loc[0] = tf.tensor_scatter_nd_update(loc[0], [[0, 3, 5, 0], [1, 0, 0, 0]], [0.0, -4.5])  # p = .5, .011
    shape = [tf.zeros((2, h, w, 2)) for h, w in SIZES]
    boxes, masks = ga_head.sparse_anchors(loc, shape, ANCHORS)  # loc_threshold 0.01
    assert [b.shape for b in boxes] == [(2, 256, 4), (2, 64, 4)] and [m.shape for m in masks] == [(2, 256), (2, 64)]
    m0 = masks[0].numpy()
    assert m0.sum() == 2 and m0[0, 3 * 16 + 5] and m0[1, 0] and masks[1].numpy().sum() == 0
    # zero shape: the squares (side 4 * stride)
    np.testing.assert_allclose(boxes[0].numpy()[0, 3 * 16 + 5], [20 - 8, 12 - 8, 20 + 8, 12 + 8])


def test_proposals_only_from_unmasked_locations():
    rng = np.random.default_rng(42)
    outputs = {"loc": [tf.constant(np.full((1, h, w, 1), -10.0), tf.float32) for h, w in SIZES],
               "shape": [tf.constant(rng.normal(0, 1, (1, h, w, 2)), tf.float32) for h, w in SIZES],
               "objectness": [tf.constant(rng.normal(size=(1, h, w, 1)), tf.float32) for h, w in SIZES],
               "deltas": [tf.constant(rng.normal(0, 1, (1, h, w, 4)), tf.float32) for h, w in SIZES]}
    outputs["loc"][1] = tf.tensor_scatter_nd_update(outputs["loc"][1], [[0, 2, 2, 0], [0, 5, 6, 0]], [3.0, 3.0])
    props = ga_head.ga_rpn_proposals(outputs, ANCHORS, [[64, 64]], max_proposals=20)
    assert props.boxes.shape == (1, 20, 4)
    valid = props.valid.numpy()[0]
    assert valid.sum() == 2  # only the two kept locations; the rest is padding
    assert (props.boxes.numpy()[0, 2:] == 0).all()
    # training proposals (mmdetection): every location, no location filter
    train_props = ga_head.ga_rpn_proposals(outputs, ANCHORS, [[64, 64]], use_loc_filter=False, max_proposals=20)
    assert train_props.valid.numpy().sum() == 20
    # the two proposals are the decoded guided anchors of those locations
    boxes, _ = ga_head.sparse_anchors(outputs["loc"], outputs["shape"], ANCHORS)
    want = []
    for y, x in ((2, 2), (5, 6)):
        d = outputs["deltas"][1][0, y, x]
        want.append(box_ops.decode_boxes(d, boxes[1][0, y * 8 + x], stds=ga_head.GA_RPN_BOX_STDS,
                                         max_shape=(64, 64)).numpy())
    got = props.boxes.numpy()[0, :2]
    order = np.argsort([-outputs["objectness"][1][0, y, x, 0].numpy() for y, x in ((2, 2), (5, 6))])
    np.testing.assert_allclose(got, np.array(want)[order], rtol=1e-5, atol=1e-4)


def test_losses_are_finite_with_and_without_objects():
    rng = np.random.default_rng(43)
    head = GARPNHead(feat_channels=8)
    out = head(features(rng))
    gt_boxes, gt_classes = gt_batch()
    losses = ga_head.ga_rpn_losses(out, ANCHORS, gt_boxes, gt_classes, [[64, 64], [64, 64]], num_samples=32,
                                   seed=[1, 2])
    assert sorted(losses) == ["loss_loc", "loss_shape", "rpn_box", "rpn_cls"]
    for value in losses.values():
        assert np.isfinite(value.numpy()) and value.dtype == tf.float32
    assert float(losses["loss_shape"]) > 0 and float(losses["loss_loc"]) > 0


@pytest.mark.slow
def test_training_reduces_the_losses_on_a_fixed_batch():
    rng = np.random.default_rng(44)
    keras.utils.set_random_seed(44)  # layer initialisation independent of test order
    gt_boxes, gt_classes = gt_batch()
    images = rng.uniform(0, 0.2, size=(2, 64, 64, 3)).astype(np.float32)
    for x1, y1, x2, y2 in gt_boxes[0, :2].astype(int):
        images[0, y1:y2, x1:x2] = 1.0
    images = tf.constant(images)
    stem = [keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")]
    head = GARPNHead(feat_channels=16)
    optimizer = keras.optimizers.Adam(0.01)
    sizes = [[64, 64], [64, 64]]

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            c3 = stem[0](images)
            out = head([c3, stem[1](c3)])
            losses = ga_head.ga_rpn_losses(out, ANCHORS, gt_boxes, gt_classes, sizes, num_samples=64, seed=seed)
            loss = tf.add_n(list(losses.values()))
        variables = stem[0].trainable_variables + stem[1].trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return losses

    history = [{k: float(v) for k, v in step(tf.constant([i, 0])).items()} for i in range(40)]
    history = {key: np.array([h[key] for h in history]) for key in history[0]}
    history["total"] = sum(history.values())
    for key, values in history.items():
        assert np.all(np.isfinite(values)), key
        # The box loss is relative to the guided anchors, which move as the shape branch learns (and
        # more of them become positive), so it need not fall; every other loss must.
        if key != "rpn_box":
            assert np.mean(values[-5:]) < 0.8 * np.mean(values[:5]), (key, values)
    c3 = stem[0](images)
    out = head([c3, stem[1](c3)])
    # The location branch has learnt the centres: higher probability on positive than on negative cells.
    targets = ga.ga_loc_targets(gt_boxes, gt_classes >= 0, SIZES, ANCHORS.strides, ANCHORS.octave_base_scale)
    for level in range(2):
        prob = tf.sigmoid(out["loc"][level][..., 0]).numpy()
        t, w = targets.targets[level].numpy(), targets.weights[level].numpy()
        assert prob[t == 1].min() > 5 * prob[(t == 0) & (w > 0)].mean(), level
    props = ga_head.ga_rpn_proposals(out, ANCHORS, sizes, max_proposals=20)
    boxes, valid = props.boxes.numpy(), props.valid.numpy()
    assert boxes.shape == (2, 20, 4) and valid.all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and boxes.min() >= 0 and boxes.max() <= 64
    assert (np.diff(props.scores.numpy(), axis=1) <= 0).all()
    assert box_ops.pairwise_iou(boxes[0, :1], gt_boxes[0, :2]).numpy().max() > 0.5  # the best finds an object


def test_location_targets_use_the_head_strides():
    # the flat/level layouts agree: a loc map equal to the targets has a smaller loss than its negation
    gt_boxes, gt_classes = gt_batch()
    targets = ga.ga_loc_targets(gt_boxes, gt_classes >= 0, SIZES, ANCHORS.strides, ANCHORS.octave_base_scale)
    good = [10 * (t * 2 - 1) for t in targets.targets]
    bad = [-g for g in good]
    assert float(ga.location_loss(good, targets)) < 0.01 * float(ga.location_loss(bad, targets))


def test_bad_channels():
    with pytest.raises(ValueError, match="deformable_groups"):
        GARPNHead(feat_channels=6)([tf.zeros([1, 4, 4, 8])])


def test_rpn_helpers_accept_per_image_anchors_and_masks():
    from tfdet.modeling.dense_heads.rpn import flatten_levels, rpn_losses, rpn_proposals
    rng = np.random.default_rng(45)
    squares = ANCHORS.squares(SIZES)
    objectness = [tf.constant(rng.normal(size=(2, h, w, 1)), tf.float32) for h, w in SIZES]
    deltas = [tf.constant(rng.normal(0, 0.3, (2, h, w, 4)), tf.float32) for h, w in SIZES]
    batched = [tf.broadcast_to(s[None], [2, *s.shape]) for s in squares]
    sizes = [[64, 64], [64, 64]]
    shared = rpn_proposals(objectness, deltas, squares, sizes, max_proposals=30, stds=(0.5, 0.5, 1, 1))
    per_image = rpn_proposals(objectness, deltas, batched, sizes, max_proposals=30, stds=(0.5, 0.5, 1, 1),
                              masks=[tf.ones([2, h * w], tf.bool) for h, w in SIZES])
    for a, b in zip(shared, per_image):
        np.testing.assert_array_equal(a, b)
    gt_boxes, gt_classes = gt_batch()
    args = (flatten_levels(objectness, 1)[..., 0], flatten_levels(deltas, 4))
    one = rpn_losses(*args, tf.concat(squares, 0), gt_boxes, gt_classes, num_samples=32, seed=[5, 6], beta=1.0)
    two = rpn_losses(*args, tf.concat(batched, 1), gt_boxes, gt_classes, num_samples=32, seed=[5, 6], beta=1.0)
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-6)


def test_inference_anchors_are_the_boxes_the_shape_loss_trains():
    """The guided anchor of a location (inference, and the RPN targets in training) is its square, centre
    kept, sides 8 s exp(0.14 dw) / exp(0.14 dh); the shape loss is minimal in (dw, dh) exactly where that box
    has the gt's sides."""
    anchors = GAAnchors(strides=(4, 8))  # GA-RPN: squares of 32 / 64 px, stds 0.14 on dw, dh
    gt = np.array([[[10.0, 15.0, 30.0, 41.0]]], np.float32)  # 20 x 26 about (20, 28): P2 location (5, 7)
    best = np.log(np.array([20.0, 26.0]) / 32.0) / 0.14
    loc = [tf.zeros((1, h, w, 1)) for h, w in SIZES]
    rng = np.random.default_rng(46)
    shape = [tf.constant(rng.normal(0, 2, (1, h, w, 2)), tf.float32) for h, w in SIZES]
    shape[0] = tf.tensor_scatter_nd_update(shape[0], [[0, 7, 5]], [best.astype(np.float32)])
    boxes, _ = ga_head.sparse_anchors(loc, shape, anchors)
    np.testing.assert_allclose(boxes[0].numpy()[0, 7 * 16 + 5], gt[0, 0], atol=1e-4)
    for level, stride in enumerate((4, 8)):  # written from the definition
        h, w = SIZES[level]
        ys, xs = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
        half = 4 * stride * np.exp(0.14 * shape[level].numpy()[0].reshape(-1, 2))
        ctr = np.stack([xs.ravel(), ys.ravel()], 1)
        np.testing.assert_allclose(boxes[level].numpy()[0], np.concatenate([ctr - half, ctr + half], 1),
                                   rtol=1e-5, atol=1e-3)

    # the training losses see the same anchors (flat layout, all levels)
    _, guided, _ = ga_head.guided_anchor_losses(loc, shape, anchors, gt, [[0]], [[64, 64]], seed=[3, 4])
    np.testing.assert_allclose(guided.numpy(), tf.concat(boxes, 1).numpy(), rtol=1e-6, atol=1e-4)

    def shape_loss_and_grad(dwdh):
        var = [tf.Variable(tf.broadcast_to(tf.constant(dwdh, tf.float32), (1, h, w, 2))) for h, w in SIZES]
        with tf.GradientTape() as tape:
            loss = ga_head.guided_anchor_losses(loc, var, anchors, gt, [[0]], [[64, 64]], seed=[3, 4])[0]
        grads = tape.gradient(loss["loss_shape"], var)
        return float(loss["loss_shape"]), max(float(tf.reduce_max(tf.abs(g))) for g in grads)

    at_best, grad_at_best = shape_loss_and_grad(best)
    assert grad_at_best < 1e-4  # every positive (all on P2 here) has the gt's sides: only the centre terms remain
    for other in (best + [0.5, 0.0], best - [0.0, 0.5], [0.0, 0.0]):
        loss, grad = shape_loss_and_grad(other)
        assert loss > at_best + 1e-4 and grad > 1e-4, other


def test_the_box_head_runs_on_features_adapted_to_the_predicted_shape():
    """objectness and deltas change with the shape prediction (feature adaption), loc does not; no gradient of
    the box head's outputs reaches the shape branch (offsets from the gradient-stopped shape)."""
    rng = np.random.default_rng(47)
    head = GARPNHead(feat_channels=8)
    x = features(rng)
    before = head(x)
    head.conv_shape.bias.assign([3.0, -3.0])
    with tf.GradientTape() as tape:
        after = head(x)
        box_outputs = tf.add_n([tf.reduce_sum(o) for k in ("objectness", "deltas") for o in after[k]])
    for k in ("objectness", "deltas"):
        assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(after[k], before[k])) > 1e-6, k
    for a, b in zip(after["loc"], before["loc"]):
        np.testing.assert_array_equal(a, b)
    grads = tape.gradient(box_outputs, [head.conv_shape.kernel, head.adaption.conv_offset.kernel])
    assert grads[0] is None and grads[1] is not None
