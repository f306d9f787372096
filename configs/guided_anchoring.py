"""Guided Anchoring config blocks (mmdetection configs/guided_anchoring), used by ga_rpn.py,
ga_faster_rcnn.py and ga_retinanet.py on top of configs/common.py.

Reference numbers (mmdetection R-50-FPN 1x COCO): GA-RPN AR1000 68.5 (RPN 58.2); GA-Faster R-CNN
39.9 box AP (Faster R-CNN 37.4); GA-RetinaNet 37.0 box AP (RetinaNet 36.5) (DESIGN.md).
"""


def _guided(v, octave_base_scale, stds, shape_iou):
    pos, neg, min_pos = shape_iou
    return dict(octave_base_scale=octave_base_scale, scales_per_octave=3, anchor_ratios=(0.5, 1.0, 2.0),
                anchor_stds=stds, deformable_groups=4, loc_threshold=0.01, center_ratio=0.2, ignore_ratio=0.5,
                loc_focal_alpha=0.25, loc_focal_gamma=2.0, loc_negative_weight=0.1, shape_beta=0.2,
                shape_pos_iou=pos, shape_neg_iou=neg, shape_min_pos_iou=min_pos, shape_samples=256,
                shape_positive_fraction=0.5, feat_channels=32 if v.tiny else 256)


def ga_rpn(v, max_proposals=1000):
    """GA-RPN (GARPNHead): one guided anchor per location on P2-P6; RPN losses on guided anchors."""
    block = _guided(v, 8, (0.07, 0.07, 0.14, 0.14), (0.7, 0.3, 0.3))
    top_k = 200 if v.tiny else 1000
    block.update(type="GARPN", levels=(2, 3, 4, 5, 6), box_stds=(0.07, 0.07, 0.11, 0.11), smooth_l1_beta=1.0,
                 num_samples=256, positive_fraction=0.5, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3, nms_iou=0.7,
                 pre_nms_top_k_train=400 if v.tiny else 2000, max_proposals_train=min(top_k, max_proposals),
                 pre_nms_top_k_test=top_k, max_proposals_test=min(top_k, max_proposals))
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
    block = dict(retina_block)
    block.update(_guided(v, 4, (1.0, 1.0, 1.0, 1.0), (0.5, 0.4, 0.4)))
    block.update(type="GARetina", neg_iou=0.5, min_pos_iou=0.0, box_stds=(1.0, 1.0, 1.0, 1.0), smooth_l1_beta=0.04)
    return block
