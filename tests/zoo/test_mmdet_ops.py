"""tfdet's box-level functions against mmdetection's own (tests/zoo/fixtures/mmdet/ops.npz, made by
tools/zoo_reference/mmdet_ops_ref.py from mmdet 3.3 / mmcv 2.1 code): anchors, the legacy 1.x anchors
and box coder, the delta coder, RoI level mapping, mask pasting, NMS as mmdetection applies it, and the
(anchor, class) top-k of its dense heads."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import mmdet_fixture
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.ops import box_ops, nms
from tfdet.ops.anchors import AnchorGenerator
from tfdet.ops.legacy import LegacyAnchorGenerator, legacy_decode_boxes, legacy_encode_boxes
from tfdet.ops.roi_align import fpn_levels

FIXTURE = mmdet_fixture.ROOT / "ops.npz"
RPN_STRIDES, RETINA_STRIDES = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def assert_stored(arrays, name, actual, **tol):
    values, index = mmdet_fixture.stored(arrays, name)
    actual = np.asarray(actual).reshape(-1)
    np.testing.assert_allclose(actual if index is None else actual[index], values, **tol)


def grid_sizes(meta, strides):
    h, w = meta["anchor_image"]
    return [(-(-h // s), -(-w // s)) for s in strides]


@pytest.mark.parametrize("name, generator, strides", [
    ("rpn", lambda: AnchorGenerator(RPN_STRIDES, scales=(8,)), RPN_STRIDES),
    ("retina", lambda: AnchorGenerator(RETINA_STRIDES, octave_base_scale=4, scales_per_octave=3), RETINA_STRIDES),
    ("ga_square", lambda: AnchorGenerator(RPN_STRIDES, ratios=(1.0,), scales=(8,)), RPN_STRIDES),
    ("legacy_rpn", lambda: LegacyAnchorGenerator(RPN_STRIDES, scales=(8,), center_offset=0.5), RPN_STRIDES),
    ("legacy_retina", lambda: LegacyAnchorGenerator(RETINA_STRIDES, octave_base_scale=4, scales_per_octave=3,
                                                    center_offset=0.5), RETINA_STRIDES),
])
def test_anchors_equal_mmdetection(ref, name, generator, strides):
    meta, arrays = ref
    for stride, anchors in zip(strides, generator()(grid_sizes(meta, strides))):
        assert_stored(arrays, f"anchors/{name}/s{stride}", anchors.numpy(), rtol=0, atol=1e-5)


def test_legacy_anchors_differ_from_current(ref):
    """The legacy layout is not the current one shifted: corners are rounded (a check that the legacy
    test above can fail)."""
    meta, _ = ref
    sizes = grid_sizes(meta, RPN_STRIDES)[:1]
    legacy = LegacyAnchorGenerator(RPN_STRIDES[:1], scales=(8,), center_offset=0.5)(sizes)[0].numpy()
    current = AnchorGenerator(RPN_STRIDES[:1], scales=(8,), center_offset=0.5)(sizes)[0].numpy()
    assert np.all(legacy == np.round(legacy)) and not np.allclose(legacy, current, atol=0.4)


def test_delta_coder_equals_mmdetection(ref):
    meta, a = ref
    stds = (0.1, 0.1, 0.2, 0.2)
    rois, deltas = a["coder/rois"], a["coder/deltas"]
    np.testing.assert_allclose(box_ops.decode_boxes(deltas, rois, stds=stds, max_shape=meta["image"]),
                               a["coder/decoded"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(box_ops.decode_boxes(deltas, rois, stds=stds), a["coder/decoded_noclip"],
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(box_ops.encode_boxes(a["coder/gt"], rois, stds=stds), a["coder/encoded"],
                               rtol=1e-5, atol=1e-5)
    # Guided anchoring's anchor coder: only (dw, dh), clamped at log(1e6), not clipped to the image.
    ga = np.concatenate([np.zeros_like(deltas[:, :2]), deltas[:, 2:]], axis=1)
    np.testing.assert_allclose(box_ops.decode_boxes(ga, rois, stds=(0.07, 0.07, 0.14, 0.14), clip_value=math.log(1e6)),
                               a["coder/decoded_ga_anchor"], rtol=1e-6, atol=1e-4)


def test_legacy_coder_equals_mmdetection(ref):
    meta, a = ref
    stds = (0.1, 0.1, 0.2, 0.2)
    rois, deltas = a["coder/rois"], a["coder/deltas"]
    np.testing.assert_allclose(legacy_decode_boxes(deltas, rois, stds=stds, max_shape=meta["image"]),
                               a["coder/legacy_decoded"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(legacy_decode_boxes(deltas, rois, stds=stds), a["coder/legacy_decoded_noclip"],
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(legacy_encode_boxes(a["coder/gt"], rois, stds=stds), a["coder/legacy_encoded"],
                               rtol=1e-5, atol=1e-5)
    # The legacy convention is a different one: the current coder does not reproduce it.
    assert not np.allclose(box_ops.decode_boxes(deltas, rois, stds=stds, max_shape=meta["image"]),
                           a["coder/legacy_decoded"], atol=0.1)


def test_legacy_coder_round_trip_and_batched_clip():
    """mmdetection's legacy decoder is not the encoder's inverse: it drops 1.x's -0.5 on the corners, so
    a round trip widens a box by half a pixel on each side (as in mmdet)."""
    anchors = tf.constant([[[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 9.0, 9.0]]])
    boxes = tf.constant([[[12.0, 18.0, 60.0, 45.0], [1.0, 2.0, 7.0, 8.0]]])
    deltas = legacy_encode_boxes(boxes, anchors, stds=(0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(legacy_decode_boxes(deltas, anchors, stds=(0.1, 0.1, 0.2, 0.2)),
                               boxes + tf.constant([-0.5, -0.5, 0.5, 0.5]), atol=1e-4)
    clipped = legacy_decode_boxes(deltas, anchors, stds=(0.1, 0.1, 0.2, 0.2), max_shape=tf.constant([[30.0, 55.0]]))
    np.testing.assert_allclose(clipped[0, 0], [11.5, 17.5, 54.0, 29.0], atol=1e-4)  # x <= W - 1, y <= H - 1


def test_roi_levels_equal_mmdetection(ref):
    """mmdet: floor(log2(sqrt(area) / 56 + 1e-6)) in [0, 3]; tfdet's canonical form (level 4 at 224)
    gives the same levels, also at the exact level boundaries (56, 112, 224, 448)."""
    _, a = ref
    levels = fpn_levels(a["levels/boxes"], 2, 5).numpy() - 2
    np.testing.assert_array_equal(levels, a["levels/mmdet"])


def test_paste_masks_equals_mmdetection(ref):
    meta, a = ref
    masks, boxes = a["paste/masks"], a["paste/boxes"]
    h, w = meta["image"]
    soft = paste_masks(masks[None], boxes[None], (h, w), threshold=None)[0].numpy()
    assert_stored(a, "paste/soft", soft, rtol=0, atol=1e-5)
    binary = paste_masks(masks[None], boxes[None], (h, w))[0].numpy().astype(bool)
    for skip in (0, 1):  # mmdet on CPU pastes only near the boxes (skip_empty): the same binary masks
        expected = np.unpackbits(a[f"paste/binary_skip_empty_{skip}"], axis=1)[:, :h * w].reshape(binary.shape)
        assert np.array_equal(binary, expected.astype(bool)), f"skip_empty={skip}"


def test_rpn_nms_by_level_equals_mmcv(ref):
    """RPN proposals: mmcv batched_nms with the FPN level as group, IoU 0.7, kept in score order."""
    _, a = ref
    kept = nms.batched_nms(a["nms/boxes"][None], a["nms/scores"][None], 200, 0.7, groups=a["nms/levels"][None])
    indices = kept.indices.numpy()[0]
    np.testing.assert_array_equal(indices[indices >= 0], a["nms/batched_keep"])


def test_multiclass_nms_equals_mmdetection(ref):
    """R-CNN test: score > 0.05 per class, class-wise NMS 0.5, the best 100 (mmdet multiclass_nms)."""
    _, a = ref
    scores = a["nms/class_scores"][None, :, :-1]  # background last
    dets = nms.multiclass_nms(a["nms/class_boxes"][None], scores, 100, iou_threshold=0.5, score_threshold=0.05)
    count = int(dets.num_valid[0])
    expected = a["nms/multiclass_dets"]
    assert count == len(expected)
    np.testing.assert_allclose(dets.scores[0, :count], expected[:, 4], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes[0, :count], expected[:, :4], atol=1e-4)
    np.testing.assert_array_equal(dets.classes[0, :count], a["nms/multiclass_labels"])


def test_top_candidates_equals_mmdetection(ref):
    _, a = ref
    top = nms.top_candidates(a["topk/scores"][None], 100, score_threshold=0.05)
    valid = top.valid.numpy()[0]
    assert valid.sum() == len(a["topk/kept_scores"])
    np.testing.assert_allclose(top.scores.numpy()[0][valid], a["topk/kept_scores"], rtol=1e-6)
    np.testing.assert_array_equal(top.anchors.numpy()[0][valid], a["topk/anchors"])
    np.testing.assert_array_equal(top.classes.numpy()[0][valid], a["topk/labels"])


def test_top_candidates_pads_and_sorts():
    scores = tf.constant([[[0.9, 0.01], [0.2, 0.6]], [[0.01, 0.02], [0.03, 0.04]]])
    top = nms.top_candidates(scores, 3, score_threshold=0.05)
    np.testing.assert_array_equal(top.valid, [[True, True, True], [False, False, False]])
    np.testing.assert_array_equal(top.anchors, [[0, 1, 1], [-1, -1, -1]])
    np.testing.assert_array_equal(top.classes, [[0, 1, 0], [-1, -1, -1]])
    np.testing.assert_allclose(top.scores, [[0.9, 0.6, 0.2], [0.0, 0.0, 0.0]])
    assert nms.top_candidates(scores, 10).scores.shape == (2, 4)  # K = min(k, N * C)
    with pytest.raises(ValueError, match="B, N, C"):
        nms.top_candidates(tf.zeros([2, 3]), 1)
