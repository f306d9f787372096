"""GA-RPN R-50-FPN 1x (mmdetection ga_rpn_r50_fpn_1x_coco: AR1000 68.5 vs RPN 58.2).

--config=configs/ga_rpn.py:backbone=r101   (variants: see configs/common.py)
"""

from configs import common, guided_anchoring


def get_config(arg=None):
    return common.make_config(arg, "RPN", {"rpn": guided_anchoring.ga_rpn})
