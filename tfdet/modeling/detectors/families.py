"""The named detector families: `Detector` with the parts each family must have (and its default RoI
head type). Their names are what configs put in `model.type`; `Detector` itself composes any parts."""

import keras

from tfdet.modeling.detectors.base import Detector
from tfdet.modeling.registry import register_detector


@register_detector("RPN")
@keras.saving.register_keras_serializable(package="tfdet")
class RPN(Detector):
    """RPN on its own (mmdetection RPN): outputs its proposals (class 0, objectness scores)."""

    blocks = required = ("rpn",)


@register_detector("FasterRCNN")
@keras.saving.register_keras_serializable(package="tfdet")
class FasterRCNN(Detector):
    """Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017)."""

    blocks = required = ("rpn", "roi")


@register_detector("MaskRCNN")
@keras.saving.register_keras_serializable(package="tfdet")
class MaskRCNN(Detector):
    """Mask R-CNN (He et al. 2017): Faster R-CNN + the FCN mask branch."""

    blocks = required = ("rpn", "roi", "mask")


@register_detector("KeypointRCNN")
@keras.saving.register_keras_serializable(package="tfdet")
class KeypointRCNN(Detector):
    """Keypoint R-CNN (He et al. 2017; detectron2 keypoint_rcnn_R_50_FPN): + the keypoint branch."""

    blocks = required = ("rpn", "roi", "keypoint")


@register_detector("CascadeRCNN")
@keras.saving.register_keras_serializable(package="tfdet")
class CascadeRCNN(Detector):
    """Cascade R-CNN with FPN."""

    blocks = required = ("rpn", "roi", "cascade")
    roi_type = "cascade"


@register_detector("CascadeMaskRCNN")
@keras.saving.register_keras_serializable(package="tfdet")
class CascadeMaskRCNN(Detector):
    """Cascade Mask R-CNN: a mask head per stage."""

    blocks = required = ("rpn", "roi", "cascade", "mask")
    roi_type = "cascade"


@register_detector("HybridTaskCascade")
@keras.saving.register_keras_serializable(package="tfdet")
class HybridTaskCascade(Detector):
    """HTC: interleaved box / mask stages, mask information flow, the semantic branch."""

    blocks = required = ("rpn", "roi", "cascade", "mask", "htc")
    roi_type = "htc"


@register_detector("RetinaNet")
@keras.saving.register_keras_serializable(package="tfdet")
class RetinaNet(Detector):
    """RetinaNet (Lin et al. 2017), or GA-RetinaNet (Wang et al. 2019) with model.retina.type "GARetina"."""

    blocks = required = ("retina",)
