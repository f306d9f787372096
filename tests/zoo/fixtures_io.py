"""Reading the model-zoo reference fixtures (tests/zoo/fixtures/<source>/<name>.npz; layout in
tools/zoo_reference/README.md) and comparing a computed stage with a stored one."""

import json
import pathlib

import numpy as np

from tfdet.zoo import synthetic

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def load(source, name):
    """(meta dict, {name: array}) of fixture `name` of `source` ("torchvision" / "mmdet")."""
    with np.load(FIXTURES / source / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def has_stage(arrays, name):
    return name in arrays or f"{name}/sample" in arrays


def assert_stage(arrays, name, actual, rtol=1e-4, atol=1e-5):
    """`actual` (the whole tensor, same layout as stored) equals stage `name`: elementwise when stored
    whole, else at the stored sample indices plus its [sum, sum |x|, sum x^2, shape] statistics."""
    actual = np.asarray(actual)
    if name in arrays:
        want = arrays[name]
        assert actual.shape == want.shape, f"{name}: shape {actual.shape} != stored {want.shape}"
        np.testing.assert_allclose(actual, want, rtol=rtol, atol=atol, err_msg=name)
        return
    stats = arrays[f"{name}/stats"]
    shape = tuple(int(d) for d in stats[3:])
    assert actual.shape == shape, f"{name}: shape {actual.shape} != stored {shape}"
    flat = actual.reshape(-1)
    np.testing.assert_allclose(flat[synthetic.sample_indices(flat.size)], arrays[f"{name}/sample"], rtol=rtol,
                               atol=atol, err_msg=f"{name} (sample)")
    # per-element |error| <= rtol |x| + atol bounds the error of each sum
    got, n, abs_sum, sq_sum = synthetic.tensor_stats(actual), flat.size, stats[1], stats[2]
    bounds = [rtol * abs_sum + n * atol, rtol * abs_sum + n * atol, 2 * (rtol * sq_sum + atol * abs_sum) + n * atol**2]
    for what, g, w, b in zip(("sum", "sum |x|", "sum x^2"), got, stats, bounds):
        assert abs(g - w) <= b, f"{name}: {what} {g} != stored {w} (bound {b})"


def match_rows(actual, want, atol):
    """Greedy one-to-one matching of the rows of `actual` [N, D] to those of `want` [M, D] (each row of
    `want` takes the first free row of `actual` within `atol` in every column). Returns the indices into
    `actual` of each row of `want` (-1 when none). Detections and proposals are sets: rows whose scores
    differ by less than float noise may come in either order."""
    actual, want = np.asarray(actual, np.float64).reshape(len(actual), -1), np.asarray(want, np.float64)
    want = want.reshape(len(want), -1)
    close = (np.abs(want[:, None, :] - actual[None, :, :]) <= np.asarray(atol, np.float64)).all(-1)  # [M, N]
    taken, out = np.zeros(len(actual), bool), np.full(len(want), -1)
    for i in range(len(want)):
        free = np.nonzero(close[i] & ~taken)[0]
        if free.size:
            out[i] = free[0]
            taken[free[0]] = True
    return out


def assert_same_rows(actual, want, atol, name=""):
    """`actual` and `want` hold the same rows (one-to-one, within `atol` per column), in any order."""
    assert len(actual) == len(want), f"{name}: {len(actual)} rows != stored {len(want)}"
    index = match_rows(actual, want, atol)
    missing = np.nonzero(index < 0)[0]
    assert missing.size == 0, f"{name}: {missing.size} of {len(want)} stored rows unmatched, e.g. {want[missing[:3]]}"
