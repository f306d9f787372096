"""mmdetection checkpoint files: the state dict and the meta that describes it (2.x and 3.x layouts,
tools/zoo_reference/mmdet_conventions.md section 1).

    2.x  {"meta": {"CLASSES": (...), "config": text, "mmdet_version": "2.25.0", ...}, "state_dict": {...}}
    3.x  {"meta": {"dataset_meta": {"classes": (...), ...}, "cfg": text, "mmengine_version": ...}, "state_dict"}

.pth files need torch. An .npz holds the state dict's arrays and, optionally, the meta as JSON in a
string array `__meta__` (README, Model zoo: the one-liner that writes it)."""

import json
import os
from typing import NamedTuple

import numpy as np

META_KEY = "__meta__"


class Checkpoint(NamedTuple):
    state_dict: dict  # {key: np.ndarray}
    meta: dict        # the checkpoint's meta ({} when it has none)


def _plain(value):
    """A JSON-able copy of a meta value (tuples become lists, unknown objects their str)."""
    return json.loads(json.dumps(value, default=str))


def read_checkpoint(path):
    """Checkpoint(state_dict, meta) of an mmdetection .pth / .pt (needs torch) or .npz file."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file.")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = {}
        if META_KEY in arrays:
            try:
                meta = json.loads(str(arrays.pop(META_KEY)))
            except json.JSONDecodeError as err:
                raise ValueError(f"--checkpoint {path}: its {META_KEY} array is not JSON ({err}); write it with "
                                 "json.dumps(checkpoint['meta'], default=str) (README, Model zoo).") from None
            if not isinstance(meta, dict):
                raise ValueError(f"--checkpoint {path}: {META_KEY} must hold a JSON object (the checkpoint's meta).")
        return Checkpoint(arrays, meta)
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError(f"--checkpoint {path}: reading .pth files needs PyTorch; without it convert the file to "
                         ".npz on a machine with torch (README, Model zoo: the one-liner keeps the meta).") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pylint: disable=broad-except  (torch raises several kinds for unsafe pickles)
        raise ValueError(f"--checkpoint {path}: torch.load(weights_only=True) refused it ({str(err)[:300]}); if you "
                         "trust the file, write an .npz with weights_only=False (README, Model zoo).") from None
    meta = {}
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        meta = _plain(loaded.get("meta") or {})
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"--checkpoint {path}: not a state dict nor an mmdetection checkpoint.")
    state_dict = {k: v.detach().cpu().numpy() for k, v in loaded.items() if hasattr(v, "detach")}
    return Checkpoint(state_dict, meta)


def config_text(meta):
    """The config text of a checkpoint's meta (3.x "cfg", 2.x "config"), or None."""
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str) and meta[key].strip():
            return meta[key]
    return None


def class_names(meta):
    """The class names of a checkpoint's meta (3.x dataset_meta["classes"], early 3.0 upper-case keys,
    2.x CLASSES), or None."""
    dataset = meta.get("dataset_meta")
    if isinstance(dataset, dict):
        lower = {str(k).lower(): v for k, v in dataset.items()}
        if lower.get("classes"):
            return [str(c) for c in lower["classes"]]
    if meta.get("CLASSES"):
        names = meta["CLASSES"]
        return [names] if isinstance(names, str) else [str(c) for c in names]
    return None
