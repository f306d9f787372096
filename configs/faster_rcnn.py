"""Faster R-CNN R-50-FPN 1x (mmdetection faster_rcnn_r50_fpn_1x_coco: 37.4 box AP).

--config=configs/faster_rcnn.py:backbone=r101,dcn   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "FasterRCNN", {"rpn": common.rpn, "roi": common.roi})
