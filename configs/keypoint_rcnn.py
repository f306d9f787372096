"""Keypoint R-CNN R-50-FPN 1x (detectron2 keypoint_rcnn_R_50_FPN_1x: person class, 17 COCO keypoints).

--config=configs/keypoint_rcnn.py:backbone=r50   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "KeypointRCNN", {"rpn": common.rpn, "roi": common.roi,
                                                    "keypoint": common.keypoint},
                              with_keypoints=True, num_classes=1)
