"""A converted torchvision Mask R-CNN through bin/export.py: the SavedModel, loaded by plain TensorFlow in a
process that never imports tfdet and fed the fixture's two images as PNG bytes in one request (as a client
sends them), returns torchvision's final detections (tests/zoo/fixtures/torchvision/maskrcnn_resnet50_fpn:
boxes in original pixels within 1e-2 px, scores within 1e-4, the same COCO labels, pasted masks IoU >= 0.99).

torchvision's transform resized both images (112 x 157 -> 159 x 223 by its floor rule, where tfdet's
rounding gives 160 x 224; 150 x 118 -> 203 x 160) and padded the batch to 224 x 224; the first image sent
alone is padded to 160 x 224 (the fixture's `alone/`: other P6 anchor strides, 53 x 56 instead of 56 x 56,
and other detections). The converted config's data.size_rule="torchvision" and data.serving_pad="batch"
make the SavedModel do the same (tfdet's square padding would give 224 x 224 for both requests)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.serving.helpers import run_isolated
from tests.zoo import fixtures_io
from tests.zoo.test_torchvision_models import DETECTION_ATOL, fixture_state_dict, stored_rows
from tfdet.zoo import files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "maskrcnn_resnet50_fpn"

CLIENT = """
import sys
import numpy as np
import tensorflow as tf

export, images, out = sys.argv[1:4]
loaded = tf.saved_model.load(export)
with np.load(images) as z:
    encoded = [tf.io.encode_png(z[f"image{i}"]).numpy() for i in range(len(z.files))]
result = loaded.signatures["encoded_image"](encoded_images=tf.constant(encoded))  # one request, both images
alone = loaded.signatures["encoded_image"](encoded_images=tf.constant(encoded[:1]))  # the first alone
assert "tfdet" not in sys.modules and not any(m.startswith("tfdet.") for m in sys.modules)
np.savez(out, **{k: v.numpy() for k, v in result.items()}, **{f"alone/{k}": v.numpy() for k, v in alone.items()})
"""


def assert_outputs_equal(out, arrays, b, prefix):
    """Image b of the SavedModel's outputs `out` holds the fixture's final outputs under `prefix`/b."""
    n = int(out["num_detections"][b])
    got = np.concatenate([out["detection_boxes"][b, :n], out["detection_scores"][b, :n, None],
                          out["detection_classes"][b, :n, None]], 1)  # COCO ids = torchvision labels
    want = stored_rows(arrays, b, prefix=prefix)  # boxes in original pixels
    fixtures_io.assert_same_rows(got, want, DETECTION_ATOL, f"{prefix} {b}")
    index = fixtures_io.match_rows(got, want, DETECTION_ATOL)
    height, width = (int(v) for v in arrays["input/original_sizes"][b])
    pasted = out["detection_masks"][b, index, :height, :width].astype(bool)
    stored = np.unpackbits(arrays[f"{prefix}/{b}/masks_packbits"])[:pasted.size].reshape(pasted.shape).astype(bool)
    union = (pasted | stored).sum((1, 2))
    iou = np.where(union > 0, (pasted & stored).sum((1, 2)) / np.maximum(union, 1), 1.0)
    assert iou.min() >= 0.99, (prefix, b, np.sort(iou)[:5])


@pytest.mark.slow
def test_exported_savedmodel_returns_torchvision_detections(tmp_path):
    meta, arrays = fixtures_io.load("torchvision", NAME)
    source = tmp_path / "source.npz"
    np.savez(source, **fixture_state_dict(meta, arrays))
    converted = tmp_path / "converted"
    assert files.convert_torchvision(str(source), str(converted)) == NAME
    settings = meta["settings"]  # the reference ran at min_size 160, max_size 224
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    export = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "export.py"), f"--config={converted}/config.py",
         f"--checkpoint={converted}", f"--export_dir={tmp_path}/export", "--input_type=encoded_image",
         "--mask_output=image", "--nowarmup", f"--scale={settings['max_size']}x{settings['min_size']}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stderr[-3000:]
    count = len(meta["images"])
    np.savez(tmp_path / "images.npz", **{f"image{i}": arrays[f"input/images/{i}"] for i in range(count)})
    run_isolated(CLIENT, f"{tmp_path}/export/1", str(tmp_path / "images.npz"), str(tmp_path / "out.npz"))
    with np.load(tmp_path / "out.npz") as z:
        out = {k: z[k] for k in z.files}
    np.testing.assert_array_equal(out["image_status"], np.zeros(count))
    for b in range(count):
        assert_outputs_equal(out, arrays, b, "stage/output")
    np.testing.assert_array_equal(arrays["alone/input/padded_size"], [160, 224])  # the batch: 224 x 224
    assert_outputs_equal({k[6:]: v for k, v in out.items() if k.startswith("alone/")}, arrays, 0, "alone/output")
