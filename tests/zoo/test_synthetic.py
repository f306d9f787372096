"""tfdet.zoo.synthetic: the deterministic weights/images/samples both fixture sides compute."""

import ast
import pathlib
import zlib

import numpy as np
import pytest

from tfdet.zoo import synthetic

SHAPES = {
    "backbone.body.conv1.weight": [64, 3, 7, 7],
    "backbone.body.bn1.weight": [64],
    "backbone.body.bn1.bias": [64],
    "backbone.body.bn1.running_mean": [64],
    "backbone.body.bn1.running_var": [64],
    "backbone.body.bn1.num_batches_tracked": [],
    "roi_heads.box_head.fc6.weight": [1024, 12544],
    "roi_heads.box_head.fc6.bias": [1024],
}


def test_imports_only_numpy_and_stdlib():
    """The side environment loads the file by path, without tfdet: it must not import anything else."""
    tree = ast.parse(pathlib.Path(synthetic.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"numpy", "zlib", "math", "json"}, names


def test_deterministic_per_key_and_skips_statistics():
    a = synthetic.synthetic_state_dict(SHAPES, seed=3)
    b = synthetic.synthetic_state_dict({k: SHAPES[k] for k in reversed(list(SHAPES))}, seed=3)
    assert list(a) == [k for k in SHAPES if synthetic.is_synthesized(k)]
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in a)
    for k in a:  # one key's values do not depend on the other keys or their order
        assert a[k].dtype == np.float32 and a[k].shape == tuple(SHAPES[k])
        np.testing.assert_array_equal(a[k], b[k])
    c = synthetic.synthetic_state_dict(SHAPES, seed=4)
    assert not np.array_equal(a["backbone.body.conv1.weight"], c["backbone.body.conv1.weight"])
    assert not np.array_equal(a["backbone.body.bn1.bias"][:16], a["roi_heads.box_head.fc6.bias"][:16])


def test_stream_is_uniform_doubles_of_seed_and_crc32():
    """The documented recipe, written out independently: (seed, crc32(key)) -> random() -> affine."""
    key, shape = "roi_heads.box_head.fc6.bias", (1024,)
    u = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, zlib.crc32(key.encode())]))).random(1024)
    want = (0.0 + 0.1 * (2.0 * u - 1.0)).astype(np.float32)  # bias: uniform in [-0.1, 0.1]
    np.testing.assert_array_equal(synthetic.synthetic_state_dict({key: shape}, 7)[key], want)


def test_default_scales():
    w = synthetic.synthetic_state_dict(SHAPES, seed=0)
    conv = w["backbone.body.conv1.weight"]
    assert abs(conv.mean()) < 0.01 and conv.std() == pytest.approx((2 / 147) ** 0.5, rel=0.03)
    assert abs(np.abs(conv).max() - (2 / 147) ** 0.5 * 3 ** 0.5) < 0.01  # uniform: bounded at sqrt(3) std
    fc6 = w["roi_heads.box_head.fc6.weight"]
    assert fc6.std() == pytest.approx((2 / 12544) ** 0.5, rel=0.01)
    gamma = w["backbone.body.bn1.weight"]
    assert 0.5 <= gamma.min() and gamma.max() <= 1.5 and gamma.std() > 0.2
    for key in ("backbone.body.bn1.bias", "roi_heads.box_head.fc6.bias"):
        assert np.abs(w[key]).max() <= 0.1 and w[key].std() > 0.04


def test_overrides():
    key = "roi_heads.box_head.fc6.bias"
    w = synthetic.synthetic_state_dict(SHAPES, 0, overrides={key: {"mean": -4.0, "std": 0.5}})
    assert w[key].mean() == pytest.approx(-4.0, abs=0.05) and w[key].std() == pytest.approx(0.5, rel=0.05)
    base = synthetic.synthetic_state_dict(SHAPES, 0)
    np.testing.assert_allclose((w[key] + 4.0) * 0.1 / (0.5 * 3**0.5), base[key], atol=1e-6)  # same draws
    np.testing.assert_array_equal(w["backbone.body.conv1.weight"], base["backbone.body.conv1.weight"])
    with pytest.raises(KeyError, match="not in the state dict"):
        synthetic.synthetic_state_dict(SHAPES, 0, overrides={"nope.weight": {"std": 1.0}})


def test_sample_indices_and_stats():
    np.testing.assert_array_equal(synthetic.sample_indices(100), np.arange(100))
    idx = synthetic.sample_indices(1_000_000)
    assert idx.dtype == np.int64 and 2000 < idx.size <= 2048
    assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < 1_000_000
    np.testing.assert_array_equal(idx, synthetic.sample_indices(1_000_000))
    assert not np.array_equal(idx[:100], synthetic.sample_indices(999_999)[:100])
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(synthetic.tensor_stats(x), [-3.0, 9.0, 19.0, 2, 3])


def test_image_has_structure():
    img = synthetic.synthetic_image(96, 128, seed=1)
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, synthetic.synthetic_image(96, 128, seed=1))
    assert not np.array_equal(img, synthetic.synthetic_image(96, 128, seed=2))
    f = img.astype(np.float64)
    # shapes, not noise: neighbouring pixels mostly agree, but the image is far from flat
    assert f.std() > 20 and np.median(np.abs(np.diff(f, axis=1))) < 0.1 * f.std()
