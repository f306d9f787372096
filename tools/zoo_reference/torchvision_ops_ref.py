"""torchvision's post-processing and resize conventions on small inputs: tests/zoo/fixtures/torchvision/ops.npz,
the references of tfdet/ops/postprocess.py and the "torchvision" size rule of tfdet/data/augment.py.

    /work/side/ref/bin/python -m tools.zoo_reference.torchvision_ops_ref   (also run by torchvision_ref)

Stored (all computed by torch / torchvision functions themselves):
  resize/<method>/<in>_<out>   [out, in] weights: interpolate(identity, mode, align_corners=False)
  size_rule/<min>_<max>        [N, 4] (h, w, new_h, new_w) from GeneralizedRCNNTransform on N raw sizes
  paste/{masks,boxes,image_size,probs,packbits}  paste_masks_in_image on N masks / boxes
  keypoints/{heatmaps,boxes,keypoints,scores}    heatmaps_to_keypoints (NHWC heatmaps in the fixture)
"""

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints, paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from tools.zoo_reference import common

RESIZE_CASES = [(30, 7), (30, 29), (30, 31), (30, 97), (28, 1), (14, 3), (14, 14), (14, 45), (56, 23), (56, 150)]
SIZE_RULES = [(800, 1333), (160, 224)]


def smooth(rng, shape, blur=3):
    """Smooth random maps (a box-filtered uniform field) in [0, 1]: masks and heatmaps with structure."""
    x = torch.from_numpy(rng.random(shape).astype(np.float32))
    x = F.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), blur, 1, blur // 2, count_include_pad=False).reshape(shape)
    return (x - x.amin(dim=(-2, -1), keepdim=True)) / (x.amax(dim=(-2, -1), keepdim=True) - x.amin(dim=(-2, -1),
                                                                                                    keepdim=True))


def resize_weights(arrays):
    for method in ("bilinear", "bicubic"):
        for n_in, n_out in RESIZE_CASES:
            eye = torch.eye(n_in)[:, None, :, None]  # n_in maps [1, n_in, 1]: column j is basis vector j
            out = F.interpolate(eye, size=(n_out, 1), mode=method, align_corners=False)
            arrays[f"resize/{method}/{n_in}_{n_out}"] = out[:, 0, :, 0].T.numpy()  # [out, in]


def size_rules(arrays, rng):
    raw = [(112, 157), (150, 118), (480, 640), (427, 640), (640, 480), (333, 500), (500, 375), (1, 1),
           (1000, 1500), (600, 1000), (123, 457)]
    raw += [tuple(int(v) for v in rng.integers(64, 1200, 2)) for _ in range(30)]
    for short, long in SIZE_RULES:
        transform = GeneralizedRCNNTransform(short, long, [0.0] * 3, [1.0] * 3).eval()
        rows = []
        for h, w in raw:
            out, _ = transform([torch.zeros(3, h, w)])
            rows.append((h, w, *out.image_sizes[0]))
        arrays[f"size_rule/{short}_{long}"] = np.array(rows, np.int32)


def paste(arrays, rng):
    n, image_size = 10, (48, 64)
    masks = smooth(rng, (n, 1, 28, 28))
    x1 = rng.uniform(-15, 50, n)
    y1 = rng.uniform(-15, 35, n)
    w, h = rng.uniform(0.3, 40, n), rng.uniform(0.3, 30, n)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
    boxes[0] = [2.25, 3.5, 2.75, 3.75]  # smaller than a pixel
    boxes[1] = [-30.0, -20.0, 90.0, 70.0]  # larger than the image
    probs = paste_masks_in_image(masks, torch.from_numpy(boxes), image_size)[:, 0]
    arrays["paste/masks"] = masks[:, 0].numpy()
    arrays["paste/boxes"] = boxes
    arrays["paste/image_size"] = np.array(image_size, np.int32)
    common.put(arrays, "paste/probs", probs)
    arrays["paste/packbits"] = np.packbits((probs > 0.5).numpy().reshape(-1))


def keypoints(arrays, rng):
    n, k, s = 8, 4, 14
    maps = smooth(rng, (n, k, s, s)) * 6.0 - 3.0
    x1, y1 = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
    w, h = rng.uniform(0.2, 60, n), rng.uniform(0.2, 60, n)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
    boxes[0, 2:] = boxes[0, :2] + [0.5, 3.0]  # narrower than one pixel: width clamped to 1
    boxes[1, 2:] = boxes[1, :2] + [7.0, 5.0]  # whole sizes: ceil(w) == w
    xy, scores = heatmaps_to_keypoints(maps, torch.from_numpy(boxes))
    arrays["keypoints/heatmaps"] = maps.permute(0, 2, 3, 1).numpy()  # NHWC
    arrays["keypoints/boxes"] = boxes
    arrays["keypoints/keypoints"] = xy.numpy()
    arrays["keypoints/scores"] = scores.numpy()


def main(out_dir=None):
    rng = np.random.default_rng(1717)
    arrays = {}
    resize_weights(arrays)
    size_rules(arrays, rng)
    paste(arrays, rng)
    keypoints(arrays, rng)
    meta = {"source": "torchvision", "torchvision_version": torchvision.__version__, "torch_version": torch.__version__,
            "model": "ops", "resize_cases": RESIZE_CASES, "size_rules": SIZE_RULES,
            "functions": ["torch.nn.functional.interpolate(align_corners=False)", "GeneralizedRCNNTransform.resize",
                          "roi_heads.paste_masks_in_image", "roi_heads.heatmaps_to_keypoints"]}
    size = common.write_fixture(f"{out_dir or common.FIXTURES / 'torchvision'}/ops.npz", meta, arrays)
    print(f"== ops: {size / 1024:.0f} KiB, {len(arrays)} arrays")


if __name__ == "__main__":
    main()
