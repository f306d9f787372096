"""Augmentation: exact flips, keep-ratio resizes, padding and box-cropped masks."""

import numpy as np
import pytest
import tensorflow as tf

from tfdet.data import augment

H, W = 20, 30


def _example(seed=0, n=3, k=4):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, W - 8, n)
    y1 = rng.uniform(0, H - 8, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 8, n), y1 + rng.uniform(1, 8, n)], 1).astype(np.float32)
    kps = np.concatenate([rng.uniform(0, W, (n, k, 1)), rng.uniform(0, H, (n, k, 1)),
                          rng.integers(0, 3, (n, k, 1))], -1).astype(np.float32)
    kps[kps[..., 2] == 0] = 0  # unlabelled points are (0, 0, 0)
    return {
        "image": tf.constant(rng.integers(0, 256, (H, W, 3)), tf.uint8),
        "boxes": tf.constant(boxes),
        "classes": tf.constant(rng.integers(0, 5, n), tf.int32),
        "masks": tf.constant(rng.integers(0, 2, (n, H, W)), tf.uint8),
        "box_masks": tf.constant(rng.integers(0, 2, (n, 7, 7)), tf.uint8),
        "keypoints": tf.constant(kps),
        "semantic": tf.constant(rng.integers(0, 4, (H, W)), tf.uint8),
    }


FLIP_MAP = [0, 2, 1, 3]  # points 1 and 2 are a left/right pair


def test_flip_matches_numpy_reference_exactly():
    ex = _example()
    out = augment.flip_left_right(ex, FLIP_MAP)
    boxes = ex["boxes"].numpy()
    expected_boxes = np.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], 1)
    np.testing.assert_array_equal(out["boxes"].numpy(), expected_boxes)
    np.testing.assert_array_equal(out["image"].numpy(), ex["image"].numpy()[:, ::-1])
    np.testing.assert_array_equal(out["masks"].numpy(), ex["masks"].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(out["box_masks"].numpy(), ex["box_masks"].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(out["semantic"].numpy(), ex["semantic"].numpy()[:, ::-1])
    np.testing.assert_array_equal(out["classes"].numpy(), ex["classes"].numpy())
    kps = ex["keypoints"].numpy()
    flipped = out["keypoints"].numpy()
    for k, src in enumerate(FLIP_MAP):
        v = kps[:, src, 2]
        np.testing.assert_array_equal(flipped[:, k, 2], v)
        np.testing.assert_array_equal(flipped[:, k, 0], np.where(v > 0, W - kps[:, src, 0], 0))
        np.testing.assert_array_equal(flipped[:, k, 1], kps[:, src, 1])


def test_flip_keeps_masks_and_boxes_consistent():
    mask = np.zeros((1, H, W), np.uint8)
    mask[0, 4:9, 3:11] = 1  # exactly the box (3, 4, 11, 9)
    out = augment.flip_left_right({"image": tf.zeros([H, W, 3]), "masks": tf.constant(mask),
                                   "boxes": tf.constant([[3.0, 4.0, 11.0, 9.0]])})
    ys, xs = np.nonzero(out["masks"].numpy()[0])
    np.testing.assert_array_equal(out["boxes"].numpy()[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_flip_twice_is_identity():
    ex = _example(1)
    twice = augment.flip_left_right(augment.flip_left_right(ex, FLIP_MAP), FLIP_MAP)
    assert twice.keys() == ex.keys()
    for key in ex:
        if ex[key].dtype.is_floating:  # W - (W - x) == x up to float32 rounding
            np.testing.assert_allclose(twice[key].numpy(), ex[key].numpy(), rtol=0, atol=4e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(twice[key].numpy(), ex[key].numpy(), err_msg=key)


def test_random_flip_is_seeded():
    ex = _example(2)
    never = augment.random_flip(ex, tf.constant([1, 2]), prob=0.0, flip_map=FLIP_MAP)
    always = augment.random_flip(ex, tf.constant([1, 2]), prob=1.0, flip_map=FLIP_MAP)
    np.testing.assert_array_equal(never["boxes"], ex["boxes"])
    np.testing.assert_array_equal(always["boxes"], augment.flip_left_right(ex)["boxes"])
    choices = [bool(np.any(augment.random_flip(ex, tf.constant([s, 0]))["image"].numpy() != ex["image"].numpy()))
               for s in range(16)]
    again = [bool(np.any(augment.random_flip(ex, tf.constant([s, 0]))["image"].numpy() != ex["image"].numpy()))
             for s in range(16)]
    assert choices == again and 0 < sum(choices) < 16


@pytest.mark.parametrize("h,w,expected", [(480, 640, (800, 1067)), (640, 480, (1067, 800)),
                                          (100, 1000, (133, 1333)), (800, 1333, (800, 1333))])
def test_resize_to_1333x800_keeps_ratio(h, w, expected):
    ex = {"image": tf.zeros([h, w, 3], tf.uint8), "boxes": tf.constant([[10.0, 20.0, 50.0, 60.0]])}
    out = augment.resize_to_scale(ex, (1333, 800))
    new_h, new_w = out["image"].shape[:2]
    assert (new_h, new_w) == expected and out["image"].dtype == tf.float32
    assert min(new_h, new_w) <= 800 and max(new_h, new_w) <= 1333
    # The ratio is kept up to rounding each side to whole pixels (at most half a pixel each).
    assert abs((new_w / new_h) / (w / h) - 1) <= 0.51 / new_h + 0.51 / new_w
    sy, sx = new_h / h, new_w / w
    np.testing.assert_allclose(out["scale"].numpy(), [sy, sx], rtol=1e-6)
    np.testing.assert_allclose(out["boxes"].numpy(), [[10 * sx, 20 * sy, 50 * sx, 60 * sy]], rtol=1e-6)
    np.testing.assert_array_equal(out["valid_size"].numpy(), expected)


def test_resize_moves_masks_keypoints_and_semantic_with_boxes():
    mask = np.zeros((1, 20, 30), np.uint8)
    mask[0, 4:10, 6:16] = 1
    semantic = (mask[0] * 3).astype(np.uint8)
    ex = {"image": tf.zeros([20, 30, 3], tf.uint8), "masks": tf.constant(mask), "semantic": tf.constant(semantic),
          "boxes": tf.constant([[6.0, 4.0, 16.0, 10.0]]), "keypoints": tf.constant([[[6.0, 4.0, 2.0], [0, 0, 0]]])}
    out = augment.resize_keep_ratio(ex, 40, 1000)  # exactly x2
    np.testing.assert_array_equal(out["boxes"].numpy(), [[12, 8, 32, 20]])
    np.testing.assert_array_equal(out["keypoints"].numpy(), [[[12, 8, 2], [0, 0, 0]]])
    expected = np.zeros((40, 60), np.uint8)
    expected[8:20, 12:32] = 1
    np.testing.assert_array_equal(out["masks"].numpy()[0], expected)
    np.testing.assert_array_equal(out["semantic"].numpy(), expected * 3)
    # Scales accumulate across resizes (image_info records original -> network input).
    np.testing.assert_allclose(augment.resize_keep_ratio(out, 20, 1000)["scale"].numpy(), [1, 1])


def test_random_resize_short_edge_in_range_and_seeded():
    ex = {"image": tf.zeros([60, 90, 3], tf.uint8)}
    shorts = [int(augment.random_resize(ex, tf.constant([s, 7]), (40, 80), 1000)["image"].shape[0])
              for s in range(12)]
    assert all(40 <= s <= 80 for s in shorts) and len(set(shorts)) > 3
    assert shorts == [int(augment.random_resize(ex, tf.constant([s, 7]), (40, 80), 1000)["image"].shape[0])
                      for s in range(12)]
    capped = augment.random_resize(ex, tf.constant([0, 0]), (400, 1400), 120)
    assert tuple(capped["image"].shape[:2]) == (80, 120)


def test_pad_to_size_and_multiple():
    ex = _example()
    ex.pop("box_masks")
    out = augment.pad_to_size(ex, (32, 64))
    assert out["image"].shape == (32, 64, 3) and out["masks"].shape == (3, 32, 64)
    np.testing.assert_array_equal(out["image"].numpy()[:H, :W], ex["image"].numpy())
    assert not out["image"].numpy()[H:].any() and not out["masks"].numpy()[:, :, W:].any()
    assert (out["semantic"].numpy()[:, W:] == 255).all() and (out["semantic"].numpy()[H:] == 255).all()
    np.testing.assert_array_equal(out["semantic"].numpy()[:H, :W], ex["semantic"].numpy())
    np.testing.assert_array_equal(out["valid_size"].numpy(), [H, W])
    np.testing.assert_array_equal(out["boxes"].numpy(), ex["boxes"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the padded size"):
        augment.pad_to_size(ex, (16, 64))
    multiple = augment.pad_to_multiple({"image": tf.zeros([100, 130, 3])}, 32)
    assert multiple["image"].shape == (128, 160, 3)
    np.testing.assert_array_equal(multiple["valid_size"].numpy(), [100, 130])
    assert augment.pad_to_multiple({"image": tf.zeros([64, 96, 3])}, 32)["image"].shape == (64, 96, 3)


def test_pad_to_size_gives_static_shapes_in_graphs():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def fn(image):
        return augment.pad_to_size({"image": image, "semantic": tf.zeros(tf.shape(image)[:2], tf.uint8)},
                                   (64, 96))
    out = fn.get_concrete_function().structured_outputs
    assert out["image"].shape == (64, 96, 3) and out["semantic"].shape == (64, 96)


def _crop_reference(mask, box, size):
    """Bilinear samples at bin centres with pixel i covering [i, i + 1] and zeros outside the image."""
    h, w = mask.shape
    out = np.zeros((size, size))
    x1, y1, x2, y2 = box
    for i in range(size):
        for j in range(size):
            u = x1 + (j + 0.5) * (x2 - x1) / size - 0.5  # pixel-index coordinates
            v = y1 + (i + 0.5) * (y2 - y1) / size - 0.5
            u0, v0 = int(np.floor(u)), int(np.floor(v))
            value = 0.0
            for yy, wy in ((v0, 1 - (v - v0)), (v0 + 1, v - v0)):
                for xx, wx in ((u0, 1 - (u - u0)), (u0 + 1, u - u0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        value += wy * wx * mask[yy, xx]
            out[i, j] = value
    return out


def test_crop_masks_to_boxes_matches_reference():
    rng = np.random.default_rng(4)
    masks = (rng.random((6, H, W)) > 0.5).astype(np.uint8)
    boxes = np.array([[0, 0, W, H], [2.3, 1.7, 9.1, 15.2], [-3, -2, 5, 4], [20, 10, 33, 24],
                      [5, 5, 6, 6], [10.25, 3.5, 28.75, 11.0]], np.float32)
    crops = augment.crop_masks_to_boxes(masks, boxes, 9).numpy()
    assert crops.shape == (6, 9, 9) and crops.dtype == np.uint8
    for mask, box, crop in zip(masks, boxes, crops):
        soft = _crop_reference(mask, box, 9)
        decided = np.abs(soft - 0.5) > 1e-4  # exact ties may go either way in float32
        np.testing.assert_array_equal(crop[decided], (soft >= 0.5)[decided])


def test_crop_of_full_box_and_flip_equivariance():
    mask = np.zeros((1, H, W), np.uint8)
    mask[0, 4:9, 0:11] = 1  # touches the left image border
    box = tf.constant([[0.0, 4.0, 11.0, 9.0]])
    assert augment.crop_masks_to_boxes(mask, box, 14).numpy().all()
    rng = np.random.default_rng(5)
    masks = tf.constant((rng.random((4, H, W)) > 0.5).astype(np.uint8))
    ex = {"image": tf.zeros([H, W, 3]), "masks": masks, "boxes": tf.constant(rng.uniform(0, 8, (4, 4)) + [0, 0, 9, 9],
                                                                           tf.float32)}
    flipped = augment.flip_left_right(ex)
    crop_then_flip = augment.crop_masks_to_boxes(ex["masks"], ex["boxes"], 8).numpy()[:, :, ::-1]
    flip_then_crop = augment.crop_masks_to_boxes(flipped["masks"], flipped["boxes"], 8).numpy()
    assert np.mean(crop_then_flip != flip_then_crop) < 0.01  # only float ties can differ
    assert augment.crop_masks_to_boxes(tf.zeros([0, H, W], tf.uint8), tf.zeros([0, 4]), 8).shape == (0, 8, 8)
    with pytest.raises(ValueError, match="size"):
        augment.crop_masks_to_boxes(masks, ex["boxes"], 1)


def test_keep_ratio_size_torchvision_rule_equals_torchvision():
    """The "torchvision" rule reproduces GeneralizedRCNNTransform's sizes (tests/zoo/fixtures/torchvision/
    ops.npz), float64 floor included (600 x 1000 -> 799 x 1333; "round" gives 800); "round" stays."""
    from tests.zoo import fixtures_io

    meta, ops = fixtures_io.load("torchvision", "ops")
    for short, long in meta["size_rules"]:
        rows = ops[f"size_rule/{short}_{long}"]
        got = np.stack([augment.keep_ratio_size(h, w, short, long, rule="torchvision") for h, w in rows[:, :2]])
        np.testing.assert_array_equal(got, rows[:, 2:])
    assert augment.keep_ratio_size(600, 1000, 800, 1333) == (800, 1333)
    assert augment.keep_ratio_size(600, 1000, 800, 1333, rule="torchvision") == (799, 1333)
    ex = augment.resize_to_scale({"image": tf.zeros([480, 640, 3], tf.uint8)}, (1333, 800), rule="torchvision")
    assert ex["image"].shape[:2] == (800, 1066) and tuple(ex["valid_size"].numpy()) == (800, 1066)
    with pytest.raises(ValueError, match="rule must be"):
        augment.keep_ratio_size(1, 1, 800, 1333, rule="floor")
