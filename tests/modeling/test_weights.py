"""Checkpoint import: a synthetic state dict with torchvision / mmdetection naming lands tensor by
tensor; bad checkpoints are clear errors; the stem computes what PyTorch's would."""

import importlib.util

import keras
import numpy as np
import pytest

from tfdet.modeling.backbones import resnet, resnext
from tfdet.modeling.backbones.weights import load_torch_state_dict, read_state_dict


def torchvision_state_dict(rng, blocks=(3, 4, 6, 3), groups=1, width_per_group=64, num_classes=1000):
    """Random tensors named and shaped as torchvision.models.resnet's state_dict() (NCHW / OIHW)."""
    sd = {}

    def conv(name, out_ch, in_ch, k):
        sd[f"{name}.weight"] = rng.normal(0, 0.1, size=(out_ch, in_ch, k, k)).astype("float32")

    def bn(name, ch):
        sd[f"{name}.weight"] = rng.normal(1, 0.1, size=ch).astype("float32")
        sd[f"{name}.bias"] = rng.normal(0, 0.1, size=ch).astype("float32")
        sd[f"{name}.running_mean"] = rng.normal(0, 0.1, size=ch).astype("float32")
        sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, size=ch).astype("float32")
        sd[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, count in enumerate(blocks):
        planes = 64 * 2 ** stage
        width = int(planes * width_per_group / 64) * groups
        for block in range(count):
            prefix = f"layer{stage + 1}.{block}"
            conv(f"{prefix}.conv1", width, inplanes, 1)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width // groups, 3)
            bn(f"{prefix}.bn2", width)
            conv(f"{prefix}.conv3", planes * 4, width, 1)
            bn(f"{prefix}.bn3", planes * 4)
            if block == 0:
                conv(f"{prefix}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{prefix}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"] = rng.normal(0, 0.01, size=(num_classes, 2048)).astype("float32")
    sd["fc.bias"] = rng.normal(0, 0.01, size=num_classes).astype("float32")
    return sd


def _expected_value(model, key, tensor):
    """Where the reference tensor must be: layer '<module with _>', Keras name and layout."""
    module, param = key.rsplit(".", 1)
    layer = model.get_layer(module.replace(".", "_"))
    is_norm = module.split(".")[-1].startswith("bn") or module.endswith("downsample.1")
    if is_norm:
        name = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                "running_var": "moving_variance"}[param]
    else:
        name = {"weight": "kernel", "bias": "bias"}[param]
    variable = [w for w in layer.weights if w.path.endswith("/" + name)][0]
    if tensor.ndim == 4:
        tensor = tensor.transpose(2, 3, 1, 0)
    elif tensor.ndim == 2:
        tensor = tensor.T
    return variable, tensor


def _assert_all_landed(model, sd):
    has_fc = any(layer.name == "fc" for layer in model.layers)
    keys = [k for k in sd if not k.endswith("num_batches_tracked") and (has_fc or not k.startswith("fc."))]
    seen = set()
    for key in keys:
        variable, expected = _expected_value(model, key, sd[key])
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=key)
        seen.add(variable.path)
    assert seen == {w.path for w in model.weights}  # every model weight came from the checkpoint


def test_torchvision_resnet50_classifier_every_tensor_lands():
    sd = torchvision_state_dict(np.random.default_rng(0))
    assert len(sd) == 320  # torchvision resnet50().state_dict() has 320 entries
    model = resnet(50, norm="bn", include_top=True)
    report = load_torch_state_dict(model, sd)
    assert len(report["loaded"]) == 320 - 53 and len(report["skipped"]) == 53  # num_batches_tracked
    _assert_all_landed(model, sd)


def test_resnext_grouped_kernels_land_and_fc_is_skipped_for_a_backbone():
    sd = torchvision_state_dict(np.random.default_rng(1), groups=32, width_per_group=4)  # resnext50_32x4d
    model = resnext(50, groups=32, base_width=4, norm="frozen_bn")
    report = load_torch_state_dict(model, sd)
    assert "fc.weight" in report["skipped"]
    _assert_all_landed(model, sd)
    assert tuple(model.get_layer("layer1_0_conv2").kernel.shape) == (3, 3, 4, 128)


def test_mmdetection_detector_checkpoint_backbone_prefix(tmp_path):
    sd = torchvision_state_dict(np.random.default_rng(2))
    del sd["fc.weight"], sd["fc.bias"]
    detector = {f"backbone.{k}": v for k, v in sd.items()}
    detector["neck.lateral_convs.0.conv.weight"] = np.zeros((256, 256, 1, 1), "float32")
    path = tmp_path / "mask_rcnn_r50.npz"
    np.savez(path, **detector)
    model = resnet(50, norm="frozen_bn", style="caffe")
    load_torch_state_dict(model, str(path))
    _assert_all_landed(model, sd)


def test_stem_matches_pytorch_semantics():
    """conv1 (7x7, stride 2, pad 3) -> BN -> ReLU -> maxpool (3x3, stride 2, pad 1) in NumPy on the
    reference's OIHW tensors, versus our imported model at an odd, non-square size."""
    rng = np.random.default_rng(3)
    sd = torchvision_state_dict(rng)
    model = resnet(50, norm="frozen_bn")
    load_torch_state_dict(model, sd)
    stem = keras.Model(model.input, model.get_layer("maxpool").output)
    x = rng.normal(size=(1, 3, 33, 47)).astype("float32")  # NCHW as PyTorch sees it
    xp = np.pad(x, [(0, 0), (0, 0), (3, 3), (3, 3)])
    w = sd["conv1.weight"]
    oh, ow = (33 + 6 - 7) // 2 + 1, (47 + 6 - 7) // 2 + 1
    y = np.zeros((1, 64, oh, ow), "float64")
    for i in range(7):
        for j in range(7):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2], w[:, :, i, j])
    g, b, m, v = (sd[f"bn1.{p}"][None, :, None, None] for p in ("weight", "bias", "running_mean", "running_var"))
    y = np.maximum((y - m) / np.sqrt(v + 1e-5) * g + b, 0)
    yp = np.pad(y, [(0, 0), (0, 0), (1, 1), (1, 1)], constant_values=-np.inf)
    ph, pw = (oh + 2 - 3) // 2 + 1, (ow + 2 - 3) // 2 + 1
    pooled = np.full((1, 64, ph, pw), -np.inf)
    for i in range(3):
        for j in range(3):
            pooled = np.maximum(pooled, yp[:, :, i:i + 2 * ph:2, j:j + 2 * pw:2])
    got = stem(x.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, pooled, rtol=1e-4, atol=1e-4)


def test_missing_tensor_is_a_clear_error_and_assigns_nothing():
    sd = torchvision_state_dict(np.random.default_rng(4))
    del sd["layer3.2.bn2.running_var"]
    model = resnet(50, norm="bn")
    before = model.get_layer("conv1").kernel.numpy()
    with pytest.raises(ValueError, match="layer3_2_bn2/moving_variance"):
        load_torch_state_dict(model, sd)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)
    report = load_torch_state_dict(model, sd, strict=False)
    assert "layer3.2.bn2.running_var" not in report["loaded"]


def test_misshaped_tensor_is_a_clear_error():
    sd = torchvision_state_dict(np.random.default_rng(5))
    sd["layer2.0.conv2.weight"] = sd["layer2.0.conv2.weight"][:, :64]
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.weight.*shape"):
        load_torch_state_dict(resnet(50, norm="bn"), sd, strict=False)


def test_unexpected_key_is_a_clear_error_when_strict():
    sd = torchvision_state_dict(np.random.default_rng(6))
    sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), "float32")
    with pytest.raises(ValueError, match="layer5.0.conv1.weight"):
        load_torch_state_dict(resnet(50, norm="bn", include_top=True), sd)


def test_pth_needs_torch_or_reads_it(tmp_path):
    sd = torchvision_state_dict(np.random.default_rng(7), blocks=(1, 1, 1, 1))
    path = tmp_path / "r.pth"
    if importlib.util.find_spec("torch") is None:
        path.write_bytes(b"not read")
        with pytest.raises(ImportError, match="npz"):
            read_state_dict(path)
        return
    import torch
    torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, path)
    back = read_state_dict(path)
    assert set(back) == set(sd) and np.array_equal(back["conv1.weight"], sd["conv1.weight"])


class _FakeDeformConv2D(keras.layers.Conv2D):
    """Stands in for tfdet.layers.DeformConv2D: same constructor and weight names (kernel,
    offset_kernel, offset_bias); convolves without offsets (only the import mapping is under test)."""

    def __init__(self, filters, kernel_size, strides=1, padding=0, dilation_rate=1, groups=1,
                 deformable_groups=1, impl=None, **kwargs):
        self.pad, self.deformable_groups = padding, deformable_groups
        super().__init__(filters, kernel_size, strides=strides, padding="valid", dilation_rate=dilation_rate,
                         groups=groups, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        taps = 2 * self.deformable_groups * 9
        self.offset_kernel = self.add_weight(name="offset_kernel", shape=(3, 3, input_shape[-1], taps),
                                             initializer="zeros")
        self.offset_bias = self.add_weight(name="offset_bias", shape=(taps,), initializer="zeros")

    def call(self, inputs):
        p = self.pad
        return super().call(keras.ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]))


def test_mmcv_dcn_offset_convs_land_on_the_deformable_layers(monkeypatch):
    import tfdet.layers
    monkeypatch.setattr(tfdet.layers, "DeformConv2D", _FakeDeformConv2D, raising=False)
    model = resnet(50, norm="frozen_bn", stage_with_dcn=(False, False, False, True),
                   dcn={"modulated": False, "deformable_groups": 2})
    rng = np.random.default_rng(8)
    sd = torchvision_state_dict(rng)
    with pytest.raises(ValueError, match="layer4_0_conv2/offset_kernel"):
        load_torch_state_dict(model, sd)  # an ImageNet checkpoint has no offset branch: strict says so
    for block in range(3):  # mmcv DeformConv2dPack: conv_offset = Conv2d(512, 2 * 2 * 9, 3, bias=True)
        sd[f"layer4.{block}.conv2.conv_offset.weight"] = rng.normal(size=(36, 512, 3, 3)).astype("float32")
        sd[f"layer4.{block}.conv2.conv_offset.bias"] = rng.normal(size=36).astype("float32")
    load_torch_state_dict(model, sd)
    for block in range(3):
        layer = model.get_layer(f"layer4_{block}_conv2")
        np.testing.assert_array_equal(layer.offset_kernel.numpy(),
                                      sd[f"layer4.{block}.conv2.conv_offset.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(layer.offset_bias.numpy(), sd[f"layer4.{block}.conv2.conv_offset.bias"])
        np.testing.assert_array_equal(layer.kernel.numpy(), sd[f"layer4.{block}.conv2.weight"].transpose(2, 3, 1, 0))
