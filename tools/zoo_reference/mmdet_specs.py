"""The mmdetection reference fixtures: one Spec per `tests/zoo/fixtures/mmdet/<name>.npz` (pure data; no torch).

Each detector fixture is built from a config that ships inside the mmdet 3.3 wheel (`mmdet/.mim/configs/...`).
Weights are synthetic (tfdet/zoo/synthetic.py, seed SEED); `spread` names the output layers whose weights
are rescaled so that their outputs have the given standard deviation (logits that spread, moderate box
deltas), `bias` the layers whose bias is set to a constant (e.g. the location prior of Guided Anchoring),
`scale` the layers whose weights get a smaller std outright: the offset convs of deformable convolutions,
whose He-scaled synthetic weights give offsets of many pixels, so that float32 rounding differences grow
by a factor ~4 per deformable layer (trained DCN offsets are small: mmcv initializes them at zero), and
the content encoders of CARAFE upsamplers, whose He-scaled weights give kernel logits up to ~100: so
peaked a softmax that float32 rounding differences grow ~50x per upsampler (P2 of FPN_CARAFE moves by
2.6e-4 for a 1e-6 relative change of C2-C5; with the encoders x0.1, by 2e-6; mmcv initializes them at
N(0, 0.001)).
BN statistics are calibrated once per backbone and shared with the fixtures that name it as `base`
(see mmdet_ref.py, "Sharing").

Layouts: every fixture holds the keys of a real mmdetection 2.x checkpoint of its architecture (the model
zoo of mmdet 3.x serves the same 2.x files for all these models); the 3.x layout differs only for the RPN
detector (`rpn_head.` -> `bbox_head.`, see tools/zoo_reference/mmdet_conventions.md, "Checkpoint layouts").
"""

from typing import NamedTuple

SEED = 17
IMAGE_SIZE = (150, 200)  # (h, w) of the test image: not a multiple of 32, so padding is exercised
BACKBONE_IMAGE_SIZE = (96, 128)  # backbone-only fixtures
IMAGE_SEED, CALIBRATION_SEED = 1, 2  # tfdet.zoo.synthetic.synthetic_image seeds


class Spec(NamedTuple):
    config: str  # under mmdet/.mim/configs
    kind: str  # backbone | rpn | ga_rpn | retina | ga_retina | two_stage | cascade | htc
    base: str = None  # fixture whose identical arrays (BN statistics, stages) this one shares (mmdet_ref.py)
    spread: dict = {}  # module path -> target std of its output (bias excluded)
    bias: dict = {}  # module path -> constant bias
    scale: dict = {}  # module path -> factor on the default std of its weight (no measuring)
    test_cfg: dict = {}  # overrides of model.test_cfg (merged into the config)
    image_size: tuple = IMAGE_SIZE
    layout: str = "mmdet2"  # key layout of meta["keys"]; see mmdet_conventions.md for the other one
    calibrate: bool = None  # calibrate BN statistics (default: when there is no base); else use the base's


def _dcn_offsets(blocks=(4, 6, 3), factor=0.1):
    """scale entries for the conv_offset of every block of stages 2-4 of a ResNet-50 with DCN in c3-c5."""
    return {f"backbone.layer{s + 2}.{b}.conv2.conv_offset": factor for s, n in enumerate(blocks) for b in range(n)}


def _cascade_spread(stages=3, mask=False):
    out = {}
    for t in range(stages):
        out[f"roi_head.bbox_head.{t}.fc_cls"] = 2.0
        out[f"roi_head.bbox_head.{t}.fc_reg"] = 1.0
        if mask:
            out[f"roi_head.mask_head.{t}.conv_logits"] = 3.0
    return out


def _carafe_encoders(paths, factor=0.1):
    """scale entries for the content encoders of the CARAFE upsamplers (mmcv CARAFEPack) at `paths`."""
    return {f"{path}.content_encoder": factor for path in paths}


FPN_CARAFE_SCALE = _carafe_encoders(f"neck.upsample_modules.{i}" for i in range(4))
RPN_SPREAD = {"rpn_head.rpn_cls": 2.0, "rpn_head.rpn_reg": 0.3}
RCNN_SPREAD = {**RPN_SPREAD, "roi_head.bbox_head.fc_cls": 2.0, "roi_head.bbox_head.fc_reg": 1.0}
MASK_SPREAD = {**RCNN_SPREAD, "roi_head.mask_head.conv_logits": 3.0}
GA_RPN_SPREAD = {"rpn_head.conv_loc": 2.0, "rpn_head.conv_shape": 1.0, "rpn_head.conv_cls": 1.5,
                 "rpn_head.conv_reg": 0.5}
GA_RPN_BIAS = {"rpn_head.conv_loc": -3.0}
GA_RPN_SCALE = {"rpn_head.feature_adaption.conv_offset": 0.25}
RETINA_SPREAD = {"bbox_head.retina_cls": 0.8, "bbox_head.retina_reg": 0.3}  # the best of ~1e6 (anchor, class)
RETINA_BIAS = {"bbox_head.retina_cls": -3.0}
# RCNN test settings of the fixtures: mmdetection's defaults, but at most 50 detections (fixture size).
DETS = {"rcnn": {"max_per_img": 50}}

SPECS = {
    # R-50 pytorch style (torchvision weights in the zoo), FPN: the BN statistics of every R-50 fixture below.
    "faster_rcnn_r50_fpn": Spec("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "two_stage", spread=RCNN_SPREAD,
                                test_cfg=DETS),
    "mask_rcnn_r50_fpn": Spec("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", "two_stage", "faster_rcnn_r50_fpn",
                              spread=MASK_SPREAD, test_cfg=DETS),
    "cascade_rcnn_r50_fpn": Spec("cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py", "cascade", "faster_rcnn_r50_fpn",
                                 spread={**RPN_SPREAD, **_cascade_spread()}, test_cfg=DETS),
    "cascade_mask_rcnn_r50_fpn": Spec("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", "cascade",
                                      "cascade_rcnn_r50_fpn", spread={**RPN_SPREAD, **_cascade_spread(mask=True)},
                                      test_cfg=DETS),
    "htc_r50_fpn": Spec("htc/htc_r50_fpn_1x_coco.py", "htc", "faster_rcnn_r50_fpn",
                        spread={**RPN_SPREAD, **_cascade_spread(mask=True)}, test_cfg=DETS),
    "retinanet_r50_fpn": Spec("retinanet/retinanet_r50_fpn_1x_coco.py", "retina", "faster_rcnn_r50_fpn",
                              spread=RETINA_SPREAD, bias=RETINA_BIAS, test_cfg={"max_per_img": 50}),
    "rpn_r50_fpn": Spec("rpn/rpn_r50_fpn_1x_coco.py", "rpn", "faster_rcnn_r50_fpn", spread=RPN_SPREAD),
    "faster_rcnn_r50_fpn_carafe": Spec("carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py", "two_stage",
                                       "faster_rcnn_r50_fpn", spread=RCNN_SPREAD, test_cfg=DETS,
                                       scale=FPN_CARAFE_SCALE),
    "mask_rcnn_r50_fpn_carafe": Spec("carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py", "two_stage",
                                     "faster_rcnn_r50_fpn_carafe",
                                     spread=MASK_SPREAD, test_cfg=DETS,
                                     scale={**FPN_CARAFE_SCALE, **_carafe_encoders(["roi_head.mask_head.upsample"])}),
    # Deformable convolutions in c3-c5 change the backbone activations: their own BN statistics.
    "faster_rcnn_r50_dconv_c3-c5_fpn": Spec("dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py", "two_stage",
                                            "faster_rcnn_r50_fpn", spread=RCNN_SPREAD, test_cfg=DETS, calibrate=True,
                                            scale=_dcn_offsets()),
    "mask_rcnn_r50_mdconv_c3-c5_fpn": Spec("dcnv2/mask-rcnn_r50-mdconv-c3-c5_fpn_1x_coco.py", "two_stage",
                                           "faster_rcnn_r50_fpn", spread=MASK_SPREAD, test_cfg=DETS, calibrate=True,
                                           scale=_dcn_offsets()),
    # R-50 caffe style (the Guided Anchoring zoo models): BGR 0-255 minus mean, stride on the 1x1 conv.
    "ga_rpn_r50_caffe_fpn": Spec("guided_anchoring/ga-rpn_r50-caffe_fpn_1x_coco.py", "ga_rpn", spread=GA_RPN_SPREAD,
                                 bias=GA_RPN_BIAS, scale=GA_RPN_SCALE),
    "ga_faster_rcnn_r50_caffe_fpn": Spec("guided_anchoring/ga-faster-rcnn_r50-caffe_fpn_1x_coco.py", "two_stage",
                                         "ga_rpn_r50_caffe_fpn",
                                         spread={**GA_RPN_SPREAD, "roi_head.bbox_head.fc_cls": 2.0,
                                                 "roi_head.bbox_head.fc_reg": 1.0},
                                         bias=GA_RPN_BIAS, scale=GA_RPN_SCALE, test_cfg=DETS),
    "ga_retinanet_r50_caffe_fpn": Spec("guided_anchoring/ga-retinanet_r50-caffe_fpn_1x_coco.py", "ga_retina",
                                       "ga_rpn_r50_caffe_fpn",
                                       spread={"bbox_head.conv_loc": 2.0, "bbox_head.conv_shape": 1.0,
                                               **RETINA_SPREAD},
                                       bias={"bbox_head.conv_loc": -3.0, **RETINA_BIAS}, test_cfg={"max_per_img": 50},
                                       scale={"bbox_head.feature_adaption_cls.conv_offset": 0.25,
                                              "bbox_head.feature_adaption_reg.conv_offset": 0.25}),
    # mmdetection 1.x conventions (configs/legacy_1.x: LegacyAnchorGenerator, LegacyDeltaXYWHBBoxCoder, RoIAlign
    # aligned=False sampling_ratio=2), 2.x keys: tests/zoo turn them into a 1.x file (mmdet_conventions.md 1.2).
    "faster_rcnn_r50_fpn_1x_coco_v1": Spec("legacy_1.x/faster-rcnn_r50_fpn_1x_coco_v1.py", "two_stage",
                                           "faster_rcnn_r50_fpn", spread=RCNN_SPREAD, test_cfg=DETS),
    "retinanet_r50_fpn_1x_coco_v1": Spec("legacy_1.x/retinanet_r50_fpn_1x_coco_v1.py", "retina", "retinanet_r50_fpn",
                                         spread=RETINA_SPREAD, bias=RETINA_BIAS, test_cfg={"max_per_img": 50}),
    # Backbone variants: the backbone alone (the keys are still the whole detector's). R-101 caffe style is
    # not a fixture of its own (fixture size): its keys are R-101's, and tfdet's style and depth options are
    # independent (caffe style is checked on R-50 by the Guided Anchoring fixtures).
    "backbone_r101": Spec("faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py", "backbone", image_size=BACKBONE_IMAGE_SIZE),
    "backbone_x101_32x4d": Spec("faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py", "backbone",
                                image_size=BACKBONE_IMAGE_SIZE),
    "backbone_x101_64x4d": Spec("faster_rcnn/faster-rcnn_x101-64x4d_fpn_1x_coco.py", "backbone",
                                image_size=BACKBONE_IMAGE_SIZE),
}
