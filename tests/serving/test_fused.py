"""--ops=fused exports: the graph holds Tfdet> ops (so the stock-op scan flags them), a process without
our op library cannot load it, and tfdet loads and runs it after loading the op library."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import CATEGORY_IDS, ROOT, run_isolated, sample_images, tiny_config
from tfdet.ops import loader

SCAN = os.path.join(ROOT, "tfdet", "serving", "graph_ops.py")
pytestmark = pytest.mark.skipif(not loader.library_status().loaded, reason="tfdet op library not built")


@pytest.fixture(scope="module")
def fused_export(trained, tmp_path_factory):
    from tfdet.modeling.detectors import build_detector
    from tfdet.serving import ServingModule, export

    config = tiny_config("mask_rcnn")
    config.model.ops_impl = "fused"
    model = build_detector(config.model)
    model.build(None)
    model.set_weights(trained[0].get_weights())
    module = ServingModule(model, scale=(96, 64), category_ids=CATEGORY_IDS)
    path = export(module, str(tmp_path_factory.mktemp("fused")), version=7, input_types=("image_tensor",),
                  with_warmup=False)
    return module, path


def test_scan_flags_fused_ops(fused_export):
    script = f"import runpy, sys\nsys.argv = [{SCAN!r}, sys.argv[1]]\nrunpy.run_path({SCAN!r}, run_name='__main__')\n"
    scan = json.loads(run_isolated(script, fused_export[1]))
    assert "Tfdet>RoiAlign" in scan["ops"] and "Tfdet>RoiAlign" in scan["unregistered"]


def test_stock_process_cannot_load_fused(fused_export):
    script = ("import sys, tensorflow as tf\ntry:\n    tf.saved_model.load(sys.argv[1])\nexcept Exception as e:\n"
              "    print(type(e).__name__, str(e)[:2000])\n")
    out = run_isolated(script, fused_export[1])
    assert "Tfdet>RoiAlign" in out or "RoiAlign" in out, out


def test_tfdet_loads_and_runs_fused(fused_export, composite_export):
    """Fused vs composite RoIAlign differ by float rounding only: boxes within 1e-3 px, scores 1e-4."""
    loader.ops_module()  # the op library registers Tfdet> ops in this process
    loaded = tf.saved_model.load(fused_export[1])
    images = sample_images(seed=6)
    fused = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(images)).items()}
    composite = {k: v.numpy() for k, v in composite_export[0].image_tensor(tf.constant(images)).items()}
    assert fused["num_detections"].sum() > 0
    np.testing.assert_array_equal(fused["num_detections"], composite["num_detections"])
    np.testing.assert_array_equal(fused["detection_classes"], composite["detection_classes"])
    np.testing.assert_allclose(fused["detection_boxes"], composite["detection_boxes"], atol=1e-3)
    np.testing.assert_allclose(fused["detection_scores"], composite["detection_scores"], atol=1e-4)
