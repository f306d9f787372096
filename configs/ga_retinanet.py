"""GA-RetinaNet R-50-FPN 1x (mmdetection ga_retinanet_r50_fpn_1x_coco: 37.0 box AP vs 36.5; lr 0.01).

--config=configs/ga_retinanet.py:backbone=r101
"""

from configs import common, guided_anchoring


def get_config(arg=None):
    return common.make_config(arg, "RetinaNet", {"retina": lambda v: guided_anchoring.ga_retina(v, common.retina(v))},
                              base_lr=0.01, backbone_levels=(3, 4, 5),
                              neck=dict(min_level=3, max_level=7, extra="conv"))
