"""GA-Faster R-CNN R-50-FPN 1x (mmdetection ga_faster_r50_fpn_1x_coco: 39.9 box AP vs 37.4).

GA-RPN proposals (300 in training and at test) into the Faster R-CNN box head; gradient clipping at
norm 35 as mmdetection. --config=configs/ga_faster_rcnn.py:backbone=x101
"""

from configs import common, guided_anchoring


def get_config(arg=None):
    cfg = common.make_config(arg, "FasterRCNN", {
        "rpn": guided_anchoring.ga_faster_rpn,
        "roi": lambda v: guided_anchoring.ga_faster_roi(v, common.roi(v))})
    cfg.train.clip_norm = 35.0
    return cfg
