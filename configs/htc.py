"""Hybrid Task Cascade R-50-FPN 1x (mmdetection htc_r50_fpn_1x_coco: 42.3 box / 37.4 mask AP).

--config=configs/htc.py:backbone=r50,dcn          (variants: see configs/common.py)
--config=configs/htc.py:semantic=False            (no semantic branch: data without semantic maps)
"""

from configs import common


def get_config(arg=None):
    cfg = common.make_config(arg, "HybridTaskCascade", {"rpn": common.rpn, "roi": common.cascade_roi,
                                                        "cascade": common.cascade, "mask": common.mask,
                                                        "htc": common.htc},
                             with_masks=True, extra_options={"semantic": True})
    cfg.data.with_semantic = cfg.model.htc.semantic
    return cfg
