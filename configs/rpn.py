"""RPN R-50-FPN 1x (mmdetection rpn_r50_fpn_1x_coco: AR1000 58.2): the RPN detector with the plain RPN head
of Faster R-CNN, trained and evaluated on its own (`bin/evaluate.py --eval_types=proposal`).

--config=configs/rpn.py:backbone=r101   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "RPN", {"rpn": common.rpn})
