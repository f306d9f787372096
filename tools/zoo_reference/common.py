"""Shared helpers of the reference scripts (side environment only: torch; never imported by tfdet/tests).

The fixture scheme (tools/zoo_reference/README.md): one `tests/zoo/fixtures/<source>/<name>.npz` per model
holding `__meta__` (JSON), `bn/<key>` (calibrated BN statistics), `input/<...>` and `stage/<...>`.
Weights are not stored: tfdet/zoo/synthetic.py rebuilds them from `meta["keys"]`, `meta["seed"]` and
`meta["overrides"]`, loaded here by file path so this side never imports tfdet (nor TensorFlow).
"""

import contextlib
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
VAR_FLOOR = 1e-4  # calibrated running_var floor (absolute, and relative to the layer's mean variance)
VAR_FLOOR_RELATIVE = 0.1


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


RESIDUAL_GAMMA = 0.3


def residual_gamma_overrides(shapes, gamma=RESIDUAL_GAMMA, suffix="bn3.weight"):
    """Overrides drawing the gamma of each ResNet bottleneck's last norm (`...bn3.weight`) around `gamma`
    (std gamma / 5): residual branches stay small next to the identity path, as in trained ResNets.
    With gammas around 1 a random ResNet-50 is chaotic: float32 rounding alone moves C5 by 1.5e-4 of its
    range (torch float32 vs float64); with 0.3, by 1.4e-5, so 1e-4 comparisons are meaningful."""
    return {k: {"mean": gamma, "std": gamma / 5} for k in shapes if k.endswith(suffix)}


def is_norm_with_stats(module):
    """A BN-like module with running statistics (torch BatchNorm*, torchvision FrozenBatchNorm2d)."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm) or (
        hasattr(module, "running_mean") and hasattr(module, "running_var") and not hasattr(module, "momentum"))


@contextlib.contextmanager
def calibrating_norms(model):
    """While active, every BN's running_mean / running_var is set to the batch statistics of its input.

    Forward pre-hooks fire in execution order, so each BN is calibrated on the already-calibrated
    output of the layers before it and every stage stays O(1). A BN called several times keeps the
    statistics of its first call. Yields a list that, on exit, holds the names of the BN modules that
    were never called (they keep mean 0 / var 1)."""
    done, handles, never = set(), [], []

    def hook(module, args):
        if module in done:
            return
        x = args[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        var = x.var(dim=dims, unbiased=False)
        # A channel (nearly) dead on the calibration input must not amplify whatever it carries on
        # another input: its variance is floored at a fraction of the layer's mean (and eps may be 0).
        var = var.clamp_min(max(VAR_FLOOR, VAR_FLOOR_RELATIVE * float(var.mean())))
        # float16-representable values, so that the fixture stores them exactly in half the bytes
        module.running_mean.copy_(x.mean(dim=dims).half().to(module.running_mean.dtype))
        module.running_var.copy_(var.half().to(module.running_var.dtype))
        done.add(module)

    norms = {name: m for name, m in model.named_modules() if is_norm_with_stats(m)}
    with torch.no_grad():
        for m in norms.values():
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            handles.append(m.register_forward_pre_hook(hook))
        try:
            yield never
        finally:
            for h in handles:
                h.remove()
    never.extend(name for name, m in norms.items() if m not in done)


def calibrate_norms(model, run):
    """calibrating_norms around `run()` (a forward on the calibration input); returns the BN modules
    never called."""
    with calibrating_norms(model) as never:
        run()
    return never


@contextlib.contextmanager
def calibrating_scales(model, targets):
    """While active, each module of `targets` ({module path: {"std": s, "center": bool, "bias": m}})
    is recalibrated on its first call: its weight is scaled so that its output minus bias has std s
    (with "center", minus also each output channel's mean over the calibration data, the bias then
    becoming m - scaled channel mean: a classifier whose classes are equally likely a priori, not one
    class winning everywhere through the mean of its post-ReLU input). The recalibrated output is
    passed on, so later layers calibrate on it. Yields {module path: (factor, new bias or None)}."""
    modules = dict(model.named_modules())
    unknown = sorted(set(targets) - set(modules))
    if unknown:
        raise KeyError(f"no such modules: {unknown}")
    done, handles = {}, []

    def make_hook(path, spec):
        def hook(module, args, out):
            if path in done:
                return None
            shape = [1, -1] + [1] * (out.dim() - 2)
            bias = module.bias.detach().reshape(shape) if module.bias is not None else torch.zeros(())
            centred = out.detach().double() - bias.double()
            mean = None
            if spec.get("center"):
                dims = [d for d in range(out.dim()) if d != 1]
                mean = centred.mean(dim=dims, keepdim=True)
                centred = centred - mean
            std = float(centred.std())
            if not std > 0:
                raise RuntimeError(f"{path}: output is constant on the calibration input")
            factor = spec["std"] / std
            module.weight.mul_(factor)
            new_bias = None
            if mean is not None:
                new_bias = (spec.get("bias", 0.0) - factor * mean.reshape(-1)).float()
                module.bias.copy_(new_bias)
            done[path] = (factor, new_bias)
            return (out - bias) * factor + (module.bias.reshape(shape) if module.bias is not None else 0.0)
        return hook

    with torch.no_grad():
        for path, spec in targets.items():
            handles.append(modules[path].register_forward_hook(make_hook(path, spec)))
        try:
            yield done
        finally:
            for h in handles:
                h.remove()
    missing = sorted(set(targets) - set(done))
    if missing:
        raise RuntimeError(f"modules not called during the calibration run: {missing}")


def scale_overrides(calibrated, shapes):
    """synthetic_state_dict overrides that reproduce calibrated weights: each `<path>.weight` gets its
    default std times its factor, a centred bias its values (float32-rounded, so the meta holds
    exactly what is used)."""
    out = {}
    for path, (factor, bias) in calibrated.items():
        key = f"{path}.weight"
        _, std = synthetic.default_init(key, shapes[key])
        out[key] = {"std": float(np.float32(std * factor))}
        if bias is not None:
            out[f"{path}.bias"] = {"values": [float(v) for v in bias.numpy().astype(np.float32)]}
    return out


def buffers_to_store(model, names=("running_mean", "running_var")):
    """{"bn/<key>": float16 array} for every state-dict buffer named in `names` (calibrating_norms
    makes them float16-representable: the float16 copy is exact; readers cast to float32)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.rsplit(".", 1)[-1] in names:
            a = v.detach().cpu().numpy().astype(np.float32)
            half = a.astype(np.float16)
            if not np.array_equal(half.astype(np.float32), a):
                raise ValueError(f"{k} is not float16-representable: calibrate with calibrating_norms")
            out[f"bn/{k}"] = half
    return out


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


def snapshot(value):
    """A detached copy of a (nested list / tuple / dict of) tensor(s): later in-place edits by the
    model (torchvision's postprocess rewrites its result dicts) do not reach what was recorded."""
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, dict):
        return type(value)((k, snapshot(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value


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
            self.outputs.setdefault(stage, []).append(snapshot(out))
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
        if v.dtype == np.float64 and not k.endswith("/stats"):  # stats stay float64
            v = v.astype(np.float32)
        payload[k] = v
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **payload)
        os.chmod(tmp, 0o644)
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
