"""Reading the mmdetection reference fixtures (tests/zoo/fixtures/mmdet; tools/zoo_reference/README.md):
base-fixture sharing, stored stages, synthetic weights, the preprocessed input, set comparisons. The
weights reach tfdet through the converter (tfdet.zoo.mmdet), its one key mapping."""

import json
import pathlib

import numpy as np

from tfdet.zoo import synthetic

ROOT = pathlib.Path(__file__).parent / "fixtures" / "mmdet"


def _read(name):
    with np.load(ROOT / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def load(name):
    """(meta, arrays) of a fixture; the arrays it shares with its base (meta["shared"]; the base read
    this way in turn) included."""
    meta, arrays = _read(name)
    if meta.get("shared_from"):
        _, base = load(meta["shared_from"])
        missing = [k for k in meta["shared"] if k not in base]
        if missing:
            raise KeyError(f"{name}: base {meta['shared_from']} lacks shared arrays {missing[:5]}")
        arrays = {**{k: base[k] for k in meta["shared"]}, **arrays}
    return meta, arrays


def stored(arrays, name):
    """(values, flat indices or None) of a stage stored whole or sampled."""
    if name in arrays:
        return arrays[name].reshape(-1), None
    size = int(np.prod(arrays[f"{name}/stats"][3:]))
    return arrays[f"{name}/sample"], synthetic.sample_indices(size)


def shape(arrays, name):
    if name in arrays:
        return tuple(arrays[name].shape)
    return tuple(int(s) for s in arrays[f"{name}/stats"][3:])


def relative_error(arrays, name, actual):
    """max |actual - reference| / max |reference| over the stored values (the zoo's "within 1e-4
    relative", relative to the tensor's scale); the shapes must agree."""
    actual = np.asarray(actual, np.float64)
    if actual.shape != shape(arrays, name):
        raise AssertionError(f"{name}: shape {actual.shape}, reference {shape(arrays, name)}")
    values, index = stored(arrays, name)
    flat = actual.reshape(-1)
    picked = flat if index is None else flat[index]
    values = values.astype(np.float64)
    return float(np.max(np.abs(picked - values))) / max(float(np.max(np.abs(values))), 1e-12)


def weights(meta, arrays, prefix=""):
    """{key: float32} state dict of the keys starting with `prefix`: synthetic weights plus the stored
    BN statistics."""
    keys = {k: v for k, v in meta["keys"].items() if k.startswith(prefix)}
    out = synthetic.synthetic_state_dict(keys, meta["seed"], {k: v for k, v in meta["overrides"].items() if k in keys})
    for key in keys:
        if f"bn/{key}" in arrays:
            out[key] = arrays[f"bn/{key}"].astype(np.float32)
    missing = [k for k in keys if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"no values for {missing[:5]}")
    return out


def network_input(meta, arrays):
    """[1, Hp, Wp, 3] float32: the image as mmdet's DetDataPreprocessor feeds it to the backbone (BGR unless
    bgr_to_rgb, (x - mean) / std, zero padding after normalization to batch_input_shape)."""
    pre = meta["data_preprocessor"]
    image = arrays["input/images"].astype(np.float32)  # RGB
    if not pre.get("bgr_to_rgb", False):
        image = image[..., ::-1]  # mmdet reads BGR and keeps it
    x = (image - np.float32(pre["mean"])) / np.float32(pre["std"])
    height, width = meta["batch_input_shape"]
    out = np.zeros((x.shape[0], height, width, 3), np.float32)
    out[:, :x.shape[1], :x.shape[2]] = x
    return out


def assert_same_set(boxes, scores, expected_boxes, expected_scores, box_atol=1e-2, score_atol=1e-4, max_flips=0):
    """Boxes and scores equal the expected ones as a set (the zoo's targets: boxes within 1e-2 px, scores within
    1e-4), in the same order up to swaps of neighbours whose scores are within score_atol (near-ties that
    float32 rounding may order either way).

    max_flips: how many expected boxes may be missing, each replaced by another box. Two overlapping
    candidates whose scores differ by float32 noise (~1e-6) survive NMS either way, and what the survivor
    suppresses differs in turn; a fixture with thousands of candidates can hold such a pair.
    Returns (indices of the unmatched expected boxes, indices of the unmatched boxes)."""
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    expected_boxes, expected_scores = np.asarray(expected_boxes, np.float64), np.asarray(expected_scores, np.float64)
    if len(boxes) != len(expected_boxes):
        raise AssertionError(f"{len(boxes)} boxes, expected {len(expected_boxes)}")
    free, missing, unmatched = np.ones(len(boxes), bool), [], []
    for i, (box, score) in enumerate(zip(expected_boxes, expected_scores)):
        close = free & (np.abs(boxes - box).max(axis=1) <= box_atol) & (np.abs(scores - score) <= score_atol)
        candidates = np.flatnonzero(close)
        if not len(candidates):
            missing.append(f"{i}: {box.round(2).tolist()} score {score:.6f}")
            unmatched.append(i)
            continue
        j = candidates[np.argmin(np.abs(candidates - i))]
        if j != i and abs(scores[j] - scores[i]) > score_atol and not missing:
            raise AssertionError(f"expected box {i} matches position {j}, scores {scores[i]} vs {scores[j]} not tied")
        free[j] = False
    if len(missing) > max_flips:
        raise AssertionError(f"{len(missing)} expected boxes have no match (at most {max_flips}): {missing[:5]}")
    return unmatched, np.flatnonzero(free).tolist()


def det_masks(meta, arrays):
    """[N, H, W] bool: mmdet's pasted binary masks of the detections."""
    n, height, width = meta["mask_shape"]
    return np.unpackbits(arrays["stage/det/masks"], axis=1)[:, :height * width].reshape(n, height, width).astype(bool)


def mask_ious(masks, expected):
    """Per-detection IoU of two [N, H, W] binary mask sets (1 where both are empty)."""
    masks, expected = np.asarray(masks, bool), np.asarray(expected, bool)
    inter = (masks & expected).sum(axis=(1, 2))
    union = (masks | expected).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
