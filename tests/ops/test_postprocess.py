"""tfdet.ops.postprocess against torchvision's own outputs (tests/zoo/fixtures/torchvision/ops.npz, made by
tools/zoo_reference/torchvision_ops_ref.py) and hand-computed cases."""

import numpy as np
import pytest
import tensorflow as tf

from tests.zoo import fixtures_io
from tfdet.ops import postprocess

META, OPS = fixtures_io.load("torchvision", "ops")


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("n_in,n_out", [tuple(c) for c in META["resize_cases"]])
def test_resize_weights_equal_torch_interpolate(method, n_in, n_out):
    got = postprocess.resize_weights(n_out, n_in, method).numpy()
    # bilinear bit-exact; bicubic within float32 rounding of torch's coefficient arithmetic
    np.testing.assert_allclose(got, OPS[f"resize/{method}/{n_in}_{n_out}"], rtol=0,
                               atol=0 if method == "bilinear" else 1e-6)


def test_resize_weights_hand_computed_and_dynamic():
    # 2 -> 4 bilinear: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (last pixel repeated)
    np.testing.assert_allclose(postprocess.resize_weights(4, 2).numpy(),
                               [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7)
    fn = tf.function(lambda o, i: postprocess.resize_weights(o, i, "bicubic"),
                     input_signature=[tf.TensorSpec([], tf.int32)] * 2)
    np.testing.assert_allclose(fn(tf.constant(45), tf.constant(14)).numpy(), OPS["resize/bicubic/14_45"], atol=1e-6)
    np.testing.assert_allclose(fn(tf.constant(45), tf.constant(14)).numpy().sum(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="bilinear"):
        postprocess.resize_weights(4, 2, "nearest")


def test_paste_masks_equal_torchvision():
    masks, boxes = OPS["paste/masks"], OPS["paste/boxes"]
    size = tuple(int(v) for v in OPS["paste/image_size"])
    probs = postprocess.paste_masks_torchvision(masks[None], boxes[None], size, threshold=None).numpy()[0]
    fixtures_io.assert_stage(OPS, "paste/probs", probs, rtol=1e-5, atol=1e-6)
    binary = postprocess.paste_masks_torchvision(masks[None], boxes[None], size).numpy()[0]
    want = np.unpackbits(OPS["paste/packbits"])[:binary.size].reshape(binary.shape)
    assert binary.dtype == np.uint8
    np.testing.assert_array_equal(binary, want)


def test_paste_masks_hand_computed_corner_and_batch():
    """A constant mask in box (2.3, 1.9, 5.6, 4.2): expanded by 30/28 about its centre, truncated to
    (2, 1, 5, 4) -> a 4 x 4 paste at (2, 1) of the zero-padded 30 x 30 mask resized to 4 x 4."""
    masks = np.ones((2, 1, 28, 28), np.float32)
    boxes = np.array([[[2.3, 1.9, 5.6, 4.2]], [[-3.0, -3.0, 1.0, 1.0]]], np.float32)
    probs = postprocess.paste_masks_torchvision(masks, boxes, (8, 9), threshold=None).numpy()
    padded = np.pad(np.ones((28, 28)), 1)
    w4 = postprocess.resize_weights(4, 30).numpy()
    want = np.zeros((8, 9))
    want[1:5, 2:6] = w4 @ padded @ w4.T
    np.testing.assert_allclose(probs[0, 0], want, atol=1e-6)
    assert probs[1, 0, 2:].max() == 0 and probs[1, 0, :2, :2].min() > 0  # clipped at the top-left corner
    with pytest.raises(ValueError, match="masks must be"):
        postprocess.paste_masks_torchvision(masks[0], boxes, (8, 9))


def test_heatmaps_to_keypoints_equal_torchvision():
    heatmaps, boxes = OPS["keypoints/heatmaps"], OPS["keypoints/boxes"]
    got = postprocess.heatmaps_to_keypoints_torchvision(heatmaps[None], boxes[None]).numpy()[0]
    want_xy, want_scores = OPS["keypoints/keypoints"][..., :2], OPS["keypoints/scores"]
    np.testing.assert_allclose(got[..., :2], want_xy, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[..., 2], want_scores, rtol=1e-5, atol=1e-5)


def test_heatmaps_to_keypoints_hand_computed():
    """One peak at heatmap cell (iy=1, ix=2) of a 4 x 4 map, box of 8 x 8 from (10, 20): the bicubic 8 x 8
    resize peaks at (y=2..3, x=4..5); torchvision's first arg-max then gives x = 10 + 4.5 or 5.5."""
    heatmap = np.zeros((1, 1, 4, 4, 1), np.float32)
    heatmap[0, 0, 1, 2, 0] = 1.0
    got = postprocess.heatmaps_to_keypoints_torchvision(heatmap, np.array([[[10, 20, 18, 28]]], np.float32)).numpy()
    resized = postprocess.resize_weights(8, 4, "bicubic").numpy()
    full = resized @ heatmap[0, 0, :, :, 0] @ resized.T
    iy, ix = np.unravel_index(np.argmax(full), full.shape)
    np.testing.assert_allclose(got[0, 0, 0], [10 + ix + 0.5, 20 + iy + 0.5, full[iy, ix]], rtol=1e-6)
    assert ix in (4, 5) and iy in (2, 3)


def test_scale_to_original():
    boxes = np.array([[[10.0, 20.0, 30.0, 40.0]], [[1.0, 2.0, 3.0, 4.0]]], np.float32)
    got = postprocess.scale_to_original(boxes, [[159, 223], [203, 160]], [[112, 157], [150, 118]]).numpy()
    ry0, rx0 = np.float32(112) / np.float32(159), np.float32(157) / np.float32(223)
    np.testing.assert_array_equal(got[0, 0], [10 * rx0, 20 * ry0, 30 * rx0, 40 * ry0])
    kps = np.array([[[5.0, 6.0, 1.0], [7.0, 8.0, 0.0]]], np.float32)  # [R, K, 3]
    got = postprocess.scale_to_original(kps, (100, 200), (50, 100)).numpy()
    np.testing.assert_array_equal(got, [[[2.5, 3.0, 1.0], [3.5, 4.0, 0.0]]])
