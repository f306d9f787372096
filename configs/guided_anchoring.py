"""Guided Anchoring config blocks (mmdetection configs/guided_anchoring), used by ga_rpn.py,
ga_faster_rcnn.py and ga_retinanet.py on top of configs/common.py. The defaults are the specs'
(tfdet.modeling.dense_heads GARPNSpec / GARetinaSpec); these blocks state what a variant changes.

Reference numbers (mmdetection R-50-FPN 1x COCO): GA-RPN AR1000 68.5 (RPN 58.2); GA-Faster R-CNN
39.9 box AP (Faster R-CNN 37.4); GA-RetinaNet 37.0 box AP (RetinaNet 36.5).
"""

from configs.common import spec_block
from tfdet.modeling.dense_heads import GARetinaSpec, GARPNSpec


def ga_rpn(v, max_proposals=1000):
    """GA-RPN (GARPNHead): one guided anchor per location on P2-P6; RPN losses on guided anchors."""
    top_k = 200 if v.tiny else 1000
    block = spec_block(GARPNSpec.DEFAULTS, feat_channels=32 if v.tiny else 256,
                       pre_nms_top_k_train=400 if v.tiny else 2000, max_proposals_train=min(top_k, max_proposals),
                       pre_nms_top_k_test=top_k, max_proposals_test=min(top_k, max_proposals))
    block["type"] = "GARPN"
    return block


def ga_faster_rpn(v):
    """GA-Faster R-CNN's GA-RPN: 300 proposals in training and at test (the paper's setting)."""
    return ga_rpn(v, max_proposals=300)


def ga_faster_roi(v, roi_block):
    """The Faster R-CNN box head retuned for the better proposals: IoU 0.6, 256 samples, stds halved."""
    block = dict(roi_block)
    block.update(pos_iou=0.6, neg_iou=0.6, num_samples=64 if v.tiny else 256, bbox_stds=(0.05, 0.05, 0.1, 0.1),
                 score_threshold=1e-3)
    return block


def ga_retina(v, retina_block):
    """GA-RetinaNet (GARetinaHead): RetinaNet's towers and losses on guided anchors of P3-P7."""
    changed = {k: retina_block[k] for k in ("feat_channels", "num_convs", "max_detections")}
    block = spec_block(GARetinaSpec.DEFAULTS, **changed)
    block["type"] = "GARetina"
    return block
