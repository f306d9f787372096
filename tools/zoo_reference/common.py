"""Shared helpers of the reference scripts (side environment only: torch; never imported by tfdet/tests).

The fixture scheme (tools/zoo_reference/README.md): one `tests/zoo/fixtures/<source>/<name>.npz` per model
holding `__meta__` (JSON), `bn/<key>` (calibrated BN statistics), `input/<...>` and `stage/<...>`.
Weights are not stored: tfdet/zoo/synthetic.py rebuilds them from `meta["keys"]`, `meta["seed"]` and
`meta["overrides"]`, loaded here by file path so this side never imports tfdet (nor TensorFlow).
"""

import importlib.util
import json
import os
import pathlib
import tempfile

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "zoo" / "fixtures"
WHOLE_LIMIT = 4096  # tensors with fewer elements are stored whole
VAR_FLOOR = 1e-4  # calibrated running_var floor: a channel that is all zero on the calibration image


def load_synthetic():
    """tfdet/zoo/synthetic.py as a module, loaded by path (numpy-only; no tfdet package import)."""
    path = REPO / "tfdet" / "zoo" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("tfdet_zoo_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = load_synthetic()


# ---------------------------------------------------------------- weights and calibration


def state_dict_shapes(model):
    """{key: [shape]} of the WHOLE state dict (parameters and buffers), what a real checkpoint holds."""
    return {k: [int(s) for s in v.shape] for k, v in model.state_dict().items()}


def load_synthetic_weights(model, seed, overrides=None):
    """Fills every synthesized key of `model` from synthetic_state_dict; returns the shapes dict.
    The keys it leaves alone are exactly the BN statistics (set by `calibrate_norms`) and counters."""
    shapes = state_dict_shapes(model)
    weights = synthetic.synthetic_state_dict(shapes, seed, overrides)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    left = [k for k in missing if synthetic.is_synthesized(k)]
    if left or unexpected:
        raise RuntimeError(f"synthetic weights do not cover the model: missing {left}, unexpected {unexpected}")
    return shapes


def is_norm_with_stats(module):
    """A BN-like module with running statistics (torch BatchNorm*, torchvision FrozenBatchNorm2d)."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or (
        hasattr(module, "running_mean") and hasattr(module, "running_var") and not hasattr(module, "momentum"))


@torch.no_grad()
def calibrate_norms(model, run):
    """Sets every BN's running_mean / running_var to the batch statistics of its input in `run()`.

    `run` must forward the model in eval mode on a calibration input. Forward pre-hooks fire in
    execution order, so each BN is calibrated on the already-calibrated output of the layers before
    it, and every stage stays O(1). A BN called several times keeps the statistics of its first call.
    Returns the names of the BN modules that were never called (they keep mean 0 / var 1)."""
    done, handles = set(), []

    def hook(module, args):
        if module in done:
            return
        x = args[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        module.running_mean.copy_(x.mean(dim=dims).to(module.running_mean.dtype))
        var = x.var(dim=dims, unbiased=False).clamp_min(VAR_FLOOR)  # eps may be 0 (torchvision v1)
        module.running_var.copy_(var.to(module.running_var.dtype))
        done.add(module)

    norms = {name: m for name, m in model.named_modules() if is_norm_with_stats(m)}
    for m in norms.values():
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        handles.append(m.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [name for name, m in norms.items() if m not in done]


@torch.no_grad()
def output_std(model, module, run, subtract_bias=True):
    """Standard deviation of `module`'s output (minus its bias) during `run()` (a calibration pass)."""
    seen = []

    def hook(mod, args, out):
        out = out.detach().double()
        if subtract_bias and getattr(mod, "bias", None) is not None:
            shape = [1, -1] + [1] * (out.dim() - 2)
            out = out - mod.bias.detach().double().reshape(shape)
        seen.append(out.reshape(-1))

    handle = module.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{module} was not called during the calibration run")
    return float(torch.cat(seen).std())


def buffers_to_store(model, names=("running_mean", "running_var")):
    """{"bn/<key>": float32 array} for every state-dict buffer named in `names`."""
    return {f"bn/{k}": v.detach().cpu().numpy().astype(np.float32)
            for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in names}


# ---------------------------------------------------------------- capturing and storing stages


def to_numpy(x, nchw=False):
    """float32 (or integer) numpy array of a tensor; NCHW / CHW feature maps become NHWC / HWC."""
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if nchw:
        if a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)
        elif a.ndim == 3:
            a = a.transpose(1, 2, 0)
        else:
            raise ValueError(f"nchw=True needs a 3-D or 4-D tensor, got shape {a.shape}")
    if a.dtype == np.float64 or a.dtype == np.float16:
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


def put(arrays, name, x, nchw=False):
    """Stores `x` under `name`: whole when small (< WHOLE_LIMIT elements), else `name/sample`
    (values at synthetic.sample_indices) and `name/stats` ([sum, sum|x|, sum x^2, *shape])."""
    a = to_numpy(x, nchw)
    if name in arrays or f"{name}/sample" in arrays:
        raise KeyError(f"stage {name!r} stored twice")
    if a.size < WHOLE_LIMIT:
        arrays[name] = a
    else:
        arrays[f"{name}/sample"] = a.reshape(-1)[synthetic.sample_indices(a.size)]
        arrays[f"{name}/stats"] = synthetic.tensor_stats(a)
    return a


class Recorder:
    """Forward hooks that keep module outputs by stage name: `Recorder(model, {"stage": "path"})`,
    then `rec.outputs["stage"]` after a forward (a list when the module ran several times)."""

    def __init__(self, model, paths):
        modules = dict(model.named_modules())
        unknown = sorted(p for p in paths.values() if p not in modules)
        if unknown:
            raise KeyError(f"no such modules: {unknown}")
        self.outputs = {}
        self.handles = [modules[p].register_forward_hook(self._hook(stage)) for stage, p in paths.items()]

    def _hook(self, stage):
        def hook(module, args, out):
            self.outputs.setdefault(stage, []).append(out)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def write_fixture(path, meta, arrays):
    """Writes `arrays` + `__meta__` (JSON) as a compressed npz, atomically (temp file + rename): an
    interrupted run never leaves a half-written fixture."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"__meta__": np.array(json.dumps(meta, sort_keys=True))}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float64 and not k.endswith("/stats"):
            v = v.astype(np.float32)
        payload[k] = v
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path.stat().st_size


def read_fixture(path):
    """(meta dict, {name: array}) of a fixture."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


# ---------------------------------------------------------------- conditioning report


def stage_summary(arrays):
    """Lines 'name: shape mean std min max zero-fraction' for every float stage; raises on NaN/Inf or
    an all-zero / constant stage (a fixture that cannot catch a mistake)."""
    lines, bad = [], []
    for name, a in arrays.items():
        if not name.startswith("stage/") or name.endswith("/stats") or a.dtype.kind != "f":
            continue
        if not np.isfinite(a).all():
            bad.append(f"{name}: NaN or Inf")
        elif a.size > 1 and float(a.std()) == 0.0:
            bad.append(f"{name}: constant {float(a.reshape(-1)[0])}")
        lines.append(f"{name:48s} {str(a.shape):>16s} mean {a.mean():+.3e} std {a.std():.3e} "
                     f"min {a.min():+.3e} max {a.max():+.3e} zero {np.mean(a == 0):.2f}")
    if bad:
        raise ValueError("ill-conditioned reference:\n  " + "\n  ".join(bad))
    return lines


def score_summary(scores, bins=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)):
    """(histogram line, smallest gap between neighbouring sorted scores, count of gaps < 1e-3)."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    hist, _ = np.histogram(s, bins=bins)
    gaps = -np.diff(s) if s.size > 1 else np.array([np.inf])
    line = " ".join(f"[{lo:.2f},{hi:.2f}):{n}" for lo, hi, n in zip(bins[:-1], bins[1:], hist))
    return line, float(gaps.min()), int((gaps < 1e-3).sum())
