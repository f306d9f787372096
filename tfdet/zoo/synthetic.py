"""Deterministic synthetic weights, images and tensor samples for the model-zoo reference fixtures.

The side environment (torch + torchvision / mmdetection) and tfdet's tests must compute the same
numbers from the same description, so this module imports ONLY numpy and the standard library: the side
scripts load it by file path without importing tfdet (tools/zoo_reference/common.py `load_synthetic`).
See /work/notes/ZOO_FIXTURES.md, mirrored in tools/zoo_reference/README.md.

Every value comes from `Generator.random()` (uniform doubles, numpy's most version-stable stream) of a
generator seeded by (seed, crc32(name)), transformed in float64 and cast to float32 at the end.

Weights: each tensor is uniform with a mean and standard deviation chosen from its key and shape
(`default_init`), unless `overrides` names it. The rules are those of a torch state dict:
- ndim >= 2 (conv `[out, in/groups, kh, kw]`, linear `[out, in]`, conv-transpose `[in, out, kh, kw]`):
  mean 0, std sqrt(2 / fan_in), fan_in = prod(shape[1:]) (He; for a conv-transpose this is a stand-in,
  its activations are calibrated like every other head output);
- ndim 1 named `*weight` (a norm's gamma): uniform in [0.5, 1.5];
- ndim 1 named `*bias` (a conv/linear bias or a norm's beta): uniform in [-0.1, 0.1];
- `running_mean`, `running_var`, `num_batches_tracked` are not synthesized (BN statistics come from
  calibration and are stored in the fixture; torch's counter is meaningless here).
"""

import zlib

import numpy as np

NOT_SYNTHESIZED = ("running_mean", "running_var", "num_batches_tracked")
SQRT3 = 3.0**0.5


def _generator(seed, name):
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def is_synthesized(key):
    """Whether `synthetic_state_dict` produces `key` (False for BN statistics and counters)."""
    return key.rsplit(".", 1)[-1] not in NOT_SYNTHESIZED


def default_init(key, shape):
    """(mean, std) of the uniform distribution that `key` of `shape` is drawn from by default."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return 0.0, (2.0 / max(fan_in, 1)) ** 0.5
    if len(shape) == 1 and key.endswith("weight"):
        return 1.0, 0.5 / SQRT3
    if len(shape) <= 1:
        return 0.0, 0.1 / SQRT3
    raise ValueError(f"no default initialisation for {key!r} of shape {shape}")


def uniform(seed, name, shape, mean, std):
    """float32 array of `shape`: uniform with `mean` and standard deviation `std`, from (seed, name)."""
    shape = tuple(int(s) for s in shape)
    u = _generator(seed, name).random(int(np.prod(shape)))
    return (mean + std * SQRT3 * (2.0 * u - 1.0)).reshape(shape).astype(np.float32)


def synthetic_state_dict(shapes, seed, overrides=None):
    """{key: float32 array} for every synthesized key of `shapes` ({key: shape}), in its order.

    `overrides` ({key: {"mean": m, "std": s}}, either entry optional) replaces the default
    distribution of those keys: the fixtures store it in their meta (e.g. classifier weights scaled so
    that scores spread). An override naming a key that is not in `shapes` is an error.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(shapes))
    if unknown:
        raise KeyError(f"overrides name keys that are not in the state dict: {unknown}")
    out = {}
    for key, shape in shapes.items():
        if not is_synthesized(key):
            continue
        mean, std = default_init(key, shape)
        spec = overrides.get(key, {})
        mean, std = float(spec.get("mean", mean)), float(spec.get("std", std))
        out[key] = uniform(seed, key, shape, mean, std)
    return out


def sample_indices(size, n=2048):
    """Sorted distinct flat indices (int64) into a tensor of `size` elements at which big stage
    outputs are stored: every index when size <= n, else up to n drawn by a fixed generator keyed
    by `size` (duplicates dropped, so slightly fewer than n)."""
    size = int(size)
    if size <= n:
        return np.arange(size, dtype=np.int64)
    u = _generator(0x5EED, f"sample_indices/{size}").random(n)
    return np.unique(np.minimum((u * size).astype(np.int64), size - 1))


def tensor_stats(x):
    """[sum, sum |x|, sum x^2, *shape] in float64 (the `stage/<name>/stats` of a big tensor)."""
    x64 = np.asarray(x, dtype=np.float64)
    return np.array([x64.sum(), np.abs(x64).sum(), (x64 * x64).sum(), *x64.shape], dtype=np.float64)


def synthetic_image(height, width, seed):
    """uint8 RGB image [height, width, 3]: a smooth two-colour gradient background with a stripe
    texture and a few filled rectangles and ellipses (objects with edges and texture, not noise)."""
    g = _generator(seed, f"image/{height}x{width}").random(256)
    take = iter(g)

    def nxt(lo=0.0, hi=1.0):
        return lo + (hi - lo) * float(next(take))

    yy, xx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    c0 = np.array([nxt(40, 200) for _ in range(3)])
    c1 = np.array([nxt(40, 200) for _ in range(3)])
    t = (xx / max(width - 1, 1) * nxt(0.3, 1.0) + yy / max(height - 1, 1) * nxt(0.3, 1.0)) / 2.0
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    period, angle = nxt(6, 14), nxt(0, np.pi)
    img += 12.0 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)[..., None]
    for i in range(6):
        colour = np.array([nxt(0, 255) for _ in range(3)])
        cy, cx = nxt(0.1, 0.9) * height, nxt(0.1, 0.9) * width
        hh, hw = nxt(0.08, 0.3) * height, nxt(0.08, 0.3) * width
        if i % 2:
            inside = ((yy - cy) / hh) ** 2 + ((xx - cx) / hw) ** 2 <= 1.0
        else:
            inside = (np.abs(yy - cy) <= hh) & (np.abs(xx - cx) <= hw)
        shade = 1.0 + 0.15 * np.sin((xx + yy) / nxt(3, 8))
        img[inside] = (colour * shade[..., None])[inside]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
