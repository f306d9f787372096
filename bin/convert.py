"""Converts a trained detector of another library into a tfdet config and checkpoint:

    .venv/bin/python bin/convert.py --source=torchvision --checkpoint=maskrcnn_resnet50_fpn_coco.pth --out=DIR

  --checkpoint  a torchvision state dict: .pth / .pt when torch is installed, else an .npz of its arrays,
                made on a machine with torch by
                  python -c "import sys, torch, numpy as np; sd = torch.load(sys.argv[1], map_location='cpu');
                  np.savez(sys.argv[2], **{k: v.numpy() for k, v in sd.items()})" model.pth model.npz
  --arch        fasterrcnn_resnet50_fpn(_v2) | maskrcnn_resnet50_fpn(_v2) | keypointrcnn_resnet50_fpn |
                retinanet_resnet50_fpn (default: detected from the keys)

    .venv/bin/python bin/convert.py --source=mmdet --checkpoint=mask_rcnn_r50_fpn_1x_coco.pth --out=DIR

  --checkpoint  an mmdetection 2.x / 3.x checkpoint: .pth when torch is installed, else an .npz of its
                state dict with its meta as JSON in `__meta__` (the README's Model zoo section has the one-liner)
  --arch        needed when the checkpoint's meta has no config text (else it must agree with it):
                <family>_<r50|r101|x101_32x4d|x101_64x4d>[_caffe][_dconv_c3-c5|_mdconv_c3-c5]_fpn, family one
                of tfdet.zoo.mmdet.FAMILIES, e.g. faster_rcnn_r50_fpn, retinanet_r50_caffe_fpn

  --num_classes fine-tuning on N other categories: the class-specific layers (box classifier and regressor,
                mask logits, RetinaNet's classifier) are re-initialized, everything else loaded
  --out=DIR     a new (or empty) folder; receives DIR/config.py and a checkpoint in tfdet.engine.checkpoint's
                format, which bin/export.py and evaluate.py take as --config=DIR/config.py --checkpoint=DIR
                (COCO evaluation: through the export, see the README's Model zoo section).

Nothing is written unless everything converts: the files go to a temporary folder next to DIR, renamed to
DIR at the end. Keys that are missing, unexpected or mis-shaped are reported together, in one error.
"""

import _cpu_kernels  # noqa: F401  (first, before TensorFlow: oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported (by tfdet below)

from absl import app, flags  # noqa: E402

from tfdet import cli  # noqa: E402

_SOURCE = flags.DEFINE_enum("source", "torchvision", ["torchvision", "mmdet"], "the library the checkpoint is from")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "the source checkpoint: .pth (needs torch) or .npz")
_ARCH = flags.DEFINE_string("arch", "", "the source architecture (default: torchvision: detected from the keys; "
                            "mmdet: the checkpoint's config)")
_OUT = flags.DEFINE_string("out", None, "output folder (must not exist, or be empty)")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "object classes of a model to fine-tune on other "
                                    "categories: the class-specific layers are re-initialized, the rest loaded "
                                    "(default: the source's, e.g. 90 for COCO)", lower_bound=1)
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from tfdet.zoo import files

    if _SOURCE.value == "mmdet":
        arch = files.convert_mmdet(_CHECKPOINT.value, _OUT.value, arch=_ARCH.value or None,
                                   num_classes=_NUM_CLASSES.value)["arch"]
    else:
        arch = files.convert_torchvision(_CHECKPOINT.value, _OUT.value, arch=_ARCH.value or None,
                                         num_classes=_NUM_CLASSES.value)
    print(f"wrote {_OUT.value}/config.py and its checkpoint ({arch}); e.g. bin/export.py "
          f"--config={_OUT.value}/config.py --checkpoint={_OUT.value} --export_dir=EXPORT_DIR")


if __name__ == "__main__":
    cli.run(main)
