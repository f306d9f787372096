"""Importing torchvision / mmdetection ResNet and ResNeXt checkpoints into tfdet backbones.

Our layer names are the reference module paths with '.' replaced by '_' (torchvision `layer2.0.conv1`
is our `layer2_0_conv1`), so a state-dict key `<module>.<param>` lands on layer `<module>` with:

  convolution  weight [O, I/groups, kh, kw] -> kernel [kh, kw, I/groups, O];  bias -> bias
  linear (fc)  weight [O, I] -> kernel [I, O];  bias -> bias
  batch norm   weight -> gamma, bias -> beta, running_mean -> moving_mean, running_var -> moving_variance
  group norm   weight -> gamma, bias -> beta
  mmcv DCN     <conv>.conv_offset.weight / .bias -> the deformable layer's offset_kernel / offset_bias
`num_batches_tracked` is ignored. Keras' own format needs nothing from here: model.save_weights(
"x.weights.h5") / model.load_weights(...). See docs/weights.md for bringing real checkpoints.
"""

import keras
import numpy as np

_NORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_LINEAR = {"weight": "kernel", "bias": "bias"}
_OFFSET = {"weight": "offset_kernel", "bias": "offset_bias"}
_PREFIXES = ("module.", "backbone.")


def read_state_dict(path):
    """Reads a state dict as {name: np.ndarray} from `.npz` (np.savez of the tensors) or a PyTorch
    file (`.pth`, `.pt`, `.pth.tar`; needs torch). A checkpoint whose tensors sit under "state_dict"
    or "model" (mmdetection, detectron2 .pth) is unwrapped."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading '{path}' needs PyTorch (pip install torch), or export the state dict to .npz "
                          "elsewhere: np.savez(out, **{k: v.numpy() for k, v in state_dict.items()}).") from err
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    return {k: v.detach().cpu().numpy() for k, v in checkpoint.items() if hasattr(v, "detach")}


def _strip_prefixes(state_dict):
    """Drops DataParallel's 'module.'; keeps only the backbone of a whole-detector checkpoint."""
    out = dict(state_dict)
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def _target(model, key):
    """(layer, variable name) for a state-dict key, or None when the model has no such layer."""
    module, param = key.rsplit(".", 1)
    table = _LINEAR
    if module.endswith(".conv_offset"):
        module, table = module[: -len(".conv_offset")], _OFFSET
    try:
        layer = model.get_layer(module.replace(".", "_"))
    except ValueError:
        return None
    is_norm = (any(w.path.endswith("/moving_mean") for w in layer.weights)
               or isinstance(layer, keras.layers.GroupNormalization))
    if table is _LINEAR and is_norm:
        table = _NORM
    if param not in table:
        raise ValueError(f"state dict key '{key}': parameter '{param}' has no counterpart on layer "
                         f"'{layer.name}' ({type(layer).__name__}).")
    return layer, table[param]


def _to_keras_layout(value, rank):
    if rank == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if rank == 2:
        return value.T  # [out, in] -> [in, out]
    return value


def load_torch_state_dict(model, state_dict, strict=True):
    """Assigns a torchvision / mmdetection-style state dict (or a path for read_state_dict) to `model`.

    Keys for the classifier (`fc.*`) are skipped when the model has no `fc` layer (a detection
    backbone from an ImageNet checkpoint). With strict=True (default) a checkpoint key that matches no
    layer, or a model weight that no key fills, is an error; a tensor of the wrong shape always is.
    Nothing is assigned unless every check passes.

    Returns {"loaded": [keys], "skipped": [keys]}.
    """
    if not isinstance(state_dict, dict):
        state_dict = read_state_dict(state_dict)
    state_dict = _strip_prefixes(state_dict)
    has_fc = any(layer.name == "fc" for layer in model.layers)
    assignments, loaded, skipped, unexpected = {}, [], [], []
    for key in sorted(state_dict):
        if key.endswith("num_batches_tracked") or (key.startswith("fc.") and not has_fc):
            skipped.append(key)
            continue
        target = _target(model, key) if "." in key else None
        if target is None:
            unexpected.append(key)
            continue
        layer, name = target
        variable = next((w for w in layer.weights if w.path.split("/")[-1] == name), None)
        if variable is None:
            raise ValueError(f"state dict key '{key}': layer '{layer.name}' has no weight '{name}'.")
        value = _to_keras_layout(np.asarray(state_dict[key]), len(variable.shape))
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"state dict key '{key}': tensor of shape {tuple(np.shape(state_dict[key]))} does not "
                             f"fit '{variable.path}' of shape {tuple(variable.shape)} (after layout conversion "
                             f"{tuple(value.shape)}).")
        assignments[id(variable)] = (variable, value)
        loaded.append(key)
    if strict:
        if unexpected:
            raise ValueError(f"state dict has {len(unexpected)} keys that match no layer of '{model.name}': "
                             f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} (strict=False ignores them).")
        missing = [w.path for w in model.weights if id(w) not in assignments]
        if missing:
            raise ValueError(f"state dict lacks {len(missing)} weights of '{model.name}': {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''} (strict=False leaves them as they are).")
    for variable, value in assignments.values():
        variable.assign(value.astype(variable.dtype))
    return {"loaded": loaded, "skipped": skipped + unexpected}
