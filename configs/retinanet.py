"""RetinaNet R-50-FPN 1x (mmdetection retinanet_r50_fpn_1x_coco: 36.5 box AP; lr 0.01 for batch 16).

FPN P3-P7 with the extra levels from stride-2 convs on C5. --config=configs/retinanet.py:backbone=r101
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "RetinaNet", {"retina": common.retina}, base_lr=0.01,
                              backbone_levels=(3, 4, 5), neck=dict(min_level=3, max_level=7, extra="conv"))
