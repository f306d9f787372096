"""Reference fixtures of mmdetection models (side environment only: torch + mmdet 3.3 on CPU).

    /work/side/ref/bin/python -m tools.zoo_reference.mmdet_ref            # every fixture (~1 h on 2 cores)
    /work/side/ref/bin/python -m tools.zoo_reference.mmdet_ref NAME ...   # some (see mmdet_specs.SPECS)

For each Spec: build the model from the config in the mmdet wheel with mmdet's own registry, fill it
with synthetic weights (tfdet/zoo/synthetic.py), calibrate BN statistics, rescale the output layers
named by `spread`, run mmdet's real inference (`data_preprocessor` + `predict(rescale=True)`) on a
synthetic image and store every stage (mmdet_stages.py) as tests/zoo/fixtures/mmdet/<name>.npz
(scheme: tools/zoo_reference/README.md; conventions: mmdet_conventions.md).

BN statistics: calibrated on a second synthetic image (common.calibrate_norms), then rounded to
BN_BITS significant bits (exact in float16; within 1/8 of the calibrated value, plenty to keep every
stage O(1)) and stored as float16: the reference runs with exactly the stored values, and a fixture
costs ~1 byte per BN channel statistic instead of 4.

Sharing (fixture size): a fixture may name a base fixture (Spec.base, meta["shared_from"]) built on
the same backbone (same keys, hence the same synthetic weights, and the same input normalization). It
inherits the base's weight overrides for the layers they share and, unless Spec.calibrate, its BN
statistics; every array that comes out identical to the base's (BN statistics, input image, backbone,
FPN, RPN outputs, ...) is stored only there, and meta["shared"] lists them. A test reads a fixture as
the base's arrays updated with its own (`read_with_base` below; a base may have a base in turn).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from tools.zoo_reference import common
from tools.zoo_reference.mmdet_specs import CALIBRATION_SEED, IMAGE_SEED, SEED, SPECS
from tools.zoo_reference.mmdet_stages import record

OUT = common.FIXTURES / "mmdet"
BN_BITS = 3
SPREAD_ROUNDS = 2


def mmdet_modules():
    import mmcv
    import mmdet
    from mmdet.utils import register_all_modules
    register_all_modules()
    return mmdet, mmcv


def config_path(config):
    import mmdet
    return os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", config)


def build(spec):
    """(model in eval mode, config) of a spec; no pretrained backbone."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config_path(spec.config))
    cfg.model.backbone.init_cfg = None
    if spec.test_cfg:
        cfg.merge_from_dict({"model.test_cfg": spec.test_cfg})
    return MODELS.build(cfg.model).eval(), cfg


def layout_keys(model, layout):
    """{key: shape} of a real checkpoint in `layout` (mmdet2 / mmdet3) for this architecture."""
    shapes = common.state_dict_shapes(model)
    if layout == "mmdet2" and type(model).__name__ == "RPN":
        # mmdet 2.x RPN kept its head as `rpn_head`; 3.x builds it as `bbox_head` and renames on load
        # (SingleStageDetector._load_from_state_dict).
        shapes = {("rpn_head." + k[len("bbox_head."):] if k.startswith("bbox_head.") else k): v
                  for k, v in shapes.items()}
    return shapes


def load_weights(model, keys, overrides):
    """Synthetic weights from `keys` (any layout mmdet's own loader accepts), loaded with mmdet's loader."""
    weights = common.synthetic.synthetic_state_dict(keys, SEED, overrides)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    left = [k for k in missing if common.synthetic.is_synthesized(k)]
    if left or unexpected:
        raise RuntimeError(f"synthetic weights do not match the model: missing {left}, unexpected {unexpected}")


# ------------------------------------------------------------------------------------------------ inputs


def make_runner(model, image):
    """A function running mmdet's real test path on `image` (uint8 RGB [H, W, 3]); returns (data, results).

    mmdet reads images with cv2 (BGR): the preprocessor gets the BGR image and converts it as its config
    says (bgr_to_rgb for pytorch-style backbones; caffe-style ones stay BGR)."""
    from mmdet.structures import DetDataSample
    bgr = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
    size = tuple(int(s) for s in image.shape[:2])
    meta = dict(img_shape=size, ori_shape=size, scale_factor=(1.0, 1.0))

    @torch.no_grad()
    def run(backbone_only=False):
        data = model.data_preprocessor({"inputs": [bgr], "data_samples": [DetDataSample(metainfo=meta)]}, False)
        if backbone_only:
            return data, model.backbone(data["inputs"])
        return data, model.predict(data["inputs"], data["data_samples"], rescale=True)

    return run


# ------------------------------------------------------------------------------------------------ BN statistics


def round_significant(x, bits=BN_BITS):
    """x rounded to `bits` significant bits, as float16 (exact); magnitudes below 2**-14 become 0."""
    x = np.asarray(x, np.float64)
    mantissa, exponent = np.frexp(x)
    rounded = np.ldexp(np.round(mantissa * 2.0 ** bits), exponent - bits)
    rounded[np.abs(rounded) < 2.0 ** -14] = 0.0
    out = rounded.astype(np.float16)
    if not np.array_equal(out.astype(np.float64), rounded):
        raise ValueError("BN statistic out of float16 range")
    return out


def calibrated_bn(model, run):
    """{"bn/<key>": float16} calibrated and rounded statistics, also loaded into the model."""
    uncalled = common.calibrate_norms(model, run)
    if uncalled:
        raise RuntimeError(f"BN layers never called during calibration: {uncalled}")
    stats = {k: round_significant(v) for k, v in common.buffers_to_store(model).items()}
    set_bn(model, stats)
    return stats


def set_bn(model, stats):
    state = model.state_dict()
    for name, value in stats.items():
        key = name[len("bn/"):]
        if key not in state:
            raise KeyError(f"BN statistic {key} is not in the model")
        state[key].copy_(torch.from_numpy(value.astype(np.float32)))


# ------------------------------------------------------------------------------------------------ spread


def module_path(model, path):
    """The model's module path of a checkpoint (layout) path: mmdet 3.x keeps the RPN detector's head
    as `bbox_head`, its 2.x checkpoints call it `rpn_head`."""
    if type(model).__name__ == "RPN" and path.startswith("rpn_head."):
        return "bbox_head." + path[len("rpn_head."):]
    return path


@torch.no_grad()
def output_stds(model, paths, run):
    """{path: std of the module's output without its bias} over one run (every call of the module)."""
    modules = dict(model.named_modules())
    seen = {p: [] for p in paths}
    handles = []
    for path in paths:
        module = modules[module_path(model, path)]

        def hook(mod, args, path=path):
            x = args[0]
            if isinstance(mod, torch.nn.Linear):
                y = F.linear(x, mod.weight)
            else:
                y = F.conv2d(x, mod.weight, None, mod.stride, mod.padding, mod.dilation, mod.groups)
            seen[path].append(y.double().reshape(-1))
        handles.append(module.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    missing = [p for p, v in seen.items() if not v]
    if missing:
        raise RuntimeError(f"modules not called: {missing}")
    return {p: float(torch.cat(v).std()) for p, v in seen.items()}


def fixed_overrides(spec, keys):
    """Overrides that need no measuring: `scale` (a factor on the default std of a layer's weight) and
    `bias` (a constant bias)."""
    overrides = {}
    for path, factor in spec.scale.items():
        key = f"{path}.weight"
        overrides[key] = {"std": common.synthetic.default_init(key, keys[key])[1] * factor}
    overrides.update({f"{path}.bias": {"mean": float(value), "std": 0.0} for path, value in spec.bias.items()})
    return overrides


def spread_overrides(spec, model, keys, run, start):
    """synthetic_state_dict overrides: `start` (fixed ones, and the base fixture's for the layers it
    shares, so that those compute the same numbers) plus each `spread` layer's weights scaled so that
    its output (bias excluded) has the target std on the test image (two rounds, as later layers see the
    earlier ones' rescaled outputs)."""
    overrides = dict(start)
    todo = [p for p in spec.spread if f"{p}.weight" not in start]
    for _ in range(SPREAD_ROUNDS):
        load_weights(model, keys, overrides)
        measured = output_stds(model, todo, run) if todo else {}
        for path in todo:
            key = f"{path}.weight"
            std = overrides.get(key, {}).get("std", common.synthetic.default_init(key, keys[key])[1])
            overrides[key] = {"std": std * spec.spread[path] / measured[path]}
    load_weights(model, keys, overrides)  # BN statistics are not synthesized: they stay
    return overrides


# ------------------------------------------------------------------------------------------------ one fixture


def meta_of(spec, name, cfg, keys, overrides, image_size, stages, extra):
    import mmcv
    import mmdet
    import mmengine
    model_cfg = cfg.model
    return {
        "source": "mmdet", "name": name, "layout": spec.layout, "seed": SEED, "keys": keys, "overrides": overrides,
        "versions": {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__ + " (lite; kernels from "
                     "/work/shared/tools/mmdet_cpu/mmcv_ext.py)", "mmengine": mmengine.__version__,
                     "torch": torch.__version__},
        "builder": (f"mmdet.registry.MODELS.build(Config.fromfile('mmdet/.mim/configs/{spec.config}').model) after "
                    "mmdet.utils.register_all_modules(); model.backbone.init_cfg=None; eval()"),
        "config": spec.config, "config_overrides": {"model.test_cfg": spec.test_cfg} if spec.test_cfg else {},
        "kind": spec.kind, "test_cfg": _plain(model_cfg.get("test_cfg")),
        "data_preprocessor": _plain(model_cfg.get("data_preprocessor")),
        "backbone": _plain(model_cfg.get("backbone")), "neck": _plain(model_cfg.get("neck")),
        "image": {"size": list(image_size), "seed": IMAGE_SEED, "calibration_seed": CALIBRATION_SEED,
                  "generator": "tfdet.zoo.synthetic.synthetic_image(h, w, seed)", "channels": "RGB",
                  "fed_to_mmdet": "BGR (as cv2 loads images), metainfo img_shape = ori_shape = (h, w), "
                                  "scale_factor (1, 1); predict(rescale=True)"},
        "bn_rounding": f"{BN_BITS} significant bits, stored float16",
        "shared_from": None, "shared": [],
        "label_space": "mmdet: foreground 0..79 in COCO category order, background = 80 (softmax heads)",
        "stages": stages, **extra,
    }


def _plain(value):
    return json.loads(json.dumps(value.to_dict() if hasattr(value, "to_dict") else value, default=str))


def make_fixture(name, log=print):
    spec = SPECS[name]
    start = time.time()
    model, cfg = build(spec)
    keys = layout_keys(model, spec.layout)
    image = common.synthetic.synthetic_image(*spec.image_size, IMAGE_SEED)
    calibration = common.synthetic.synthetic_image(*spec.image_size, CALIBRATION_SEED)
    backbone_only = spec.kind == "backbone"
    fixed = fixed_overrides(spec, keys)
    load_weights(model, keys, fixed)
    base_meta, base = read_with_base(spec.base) if spec.base else ({}, {})
    calibrate = spec.base is None if spec.calibrate is None else spec.calibrate
    if calibrate:
        calibrated_bn(model, lambda: make_runner(model, calibration)(backbone_only))
    else:
        stats = {k: v for k, v in base.items() if k.startswith("bn/")}
        missing = sorted(set(common.buffers_to_store(model)) - set(stats))
        if missing:
            raise ValueError(f"{name}: base {spec.base} lacks BN statistics {missing[:3]}")
        set_bn(model, stats)
    inherited = {k: v for k, v in base_meta.get("overrides", {}).items() if k in keys}
    overrides = spread_overrides(spec, model, keys, make_runner(model, image), {**inherited, **fixed})
    arrays, extra = record(model, spec, make_runner(model, image), image)
    lines = common.stage_summary(arrays)
    if "stage/det/scores" in arrays:
        hist, gap, close = common.score_summary(arrays["stage/det/scores"])
        lines.append(f"scores {hist}; smallest gap {gap:.2e}, gaps < 1e-3: {close}")
    # BN statistics: calibrated here or the base's (then all shared with it, below).
    arrays.update({k: round_significant(v) for k, v in common.buffers_to_store(model).items()})
    shared = sorted(k for k in arrays if k in base and _same(arrays[k], base[k]))
    for k in shared:
        del arrays[k]
    if spec.base:
        extra.update(shared_from=spec.base, shared=shared)
    stages = sorted({k.rsplit("/", 1)[0] if k.endswith(("/sample", "/stats")) else k
                     for k in list(arrays) + shared if k.startswith("stage/")})
    meta = meta_of(spec, name, cfg, keys, overrides, spec.image_size, stages, extra)
    size = common.write_fixture(OUT / f"{name}.npz", meta, arrays)
    log(f"== {name}: {size / 1024:.1f} KiB, {len(stages)} stages ({len(shared)} arrays shared with "
        f"{spec.base}), {time.time() - start:.0f} s")
    for line in lines:
        log("   " + line)
    return size


def read_with_base(name):
    """(meta, arrays) of a fixture, the arrays it shares with its base (meta["shared_from"], itself read
    this way) included."""
    meta, arrays = common.read_fixture(OUT / f"{name}.npz")
    if meta.get("shared_from"):
        _, base = read_with_base(meta["shared_from"])
        arrays = {**{k: base[k] for k in meta["shared"]}, **arrays}
    return meta, arrays


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _depth(name):
    base = SPECS[name].base
    return 0 if base is None else 1 + _depth(base)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"fixtures (default all): {', '.join(SPECS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SPECS))
    if unknown:
        parser.error(f"unknown fixtures {unknown}; known: {list(SPECS)}")
    mmdet_modules()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    names = args.names or list(SPECS)
    names = sorted(names, key=_depth)  # bases first
    total = sum(make_fixture(n) for n in names)
    print(f"total {total / 1024:.1f} KiB")


if __name__ == "__main__":
    sys.exit(main())
