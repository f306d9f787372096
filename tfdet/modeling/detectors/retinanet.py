"""RetinaNet (Lin et al. 2017) and GA-RetinaNet (Wang et al. 2019): backbone + FPN P3-P7 + a dense head,
RetinaHead or GARetinaHead by model.retina.type ("Retina" default, "GARetina"). Composition only: the
math is in the head's spec (tfdet.modeling.dense_heads.build_retina)."""

import keras

from tfdet.modeling.dense_heads import build_retina
from tfdet.modeling.detectors.base import Detector, detection_outputs, image_sizes_of


@keras.saving.register_keras_serializable(package="tfdet")
class RetinaNet(Detector):

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.retina = build_retina(self.model_config.retina, self.num_classes)
        self.head = self.retina.make_head("retina_head", impl=self.model_config.get("ops_impl"))

    def _outputs(self, images, training):
        features = self.features(images, training=training)
        return self.head([features[lvl] for lvl in self.model_config.retina.levels])

    def compute_losses(self, batch, training=True):
        return self.retina.losses(self._outputs(batch["images"], training), batch["gt_boxes"], batch["gt_classes"],
                                  image_sizes_of(batch), gt_is_crowd=batch.get("gt_is_crowd"))

    def detect(self, images, image_sizes):
        return detection_outputs(self.retina.detections(self._outputs(images, False), image_sizes))
