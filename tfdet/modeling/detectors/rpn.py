"""RPN-only detector (mmdetection RPN): backbone + FPN + a proposal head, plain RPN or GA-RPN by
model.rpn.type ("RPN" default, "GARPN"). Composition only: the math is in the head's spec
(tfdet.modeling.dense_heads.build_rpn). Also the base of the two-stage detectors, which add RoI heads
on its proposals.

`detect` returns the proposals in the detectors' padded outputs format, class 0 and objectness scores
(D = model.rpn.max_proposals_test), so the evaluation CLI's `--eval_types=proposal` computes their
class-agnostic average recall.
"""

import keras
import tensorflow as tf

from tfdet.modeling.dense_heads import build_rpn
from tfdet.modeling.detectors.base import Detector, image_sizes_of


def proposal_outputs(proposals):
    """The padded outputs dict of Proposals: every valid proposal is class 0 with its objectness score;
    padding rows have class -1, zero boxes and scores (valid rows come first)."""
    return {"num_detections": tf.reduce_sum(tf.cast(proposals.valid, tf.int32), axis=1),
            "detection_boxes": proposals.boxes, "detection_scores": proposals.scores,
            "detection_classes": tf.where(proposals.valid, 0, -1)}


@keras.saving.register_keras_serializable(package="tfdet")
class RPN(Detector):
    """Backbone + FPN + proposal head (`self.rpn_head`, built by the spec `self.rpn`)."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.rpn = build_rpn(self.model_config.rpn)
        self.rpn_head = self.rpn.make_head("rpn_head", impl=self.model_config.get("ops_impl"))

    def _rpn_outputs(self, features):
        return self.rpn_head([features[lvl] for lvl in self.model_config.rpn.levels])

    def _rpn_losses(self, batch, training):
        """(RPN losses, head outputs, FPN features) of a training batch."""
        features = self.features(batch["images"], training=training)
        outputs = self._rpn_outputs(features)
        losses = self.rpn.losses(outputs, batch["gt_boxes"], batch["gt_classes"], image_sizes_of(batch),
                                 gt_is_crowd=batch.get("gt_is_crowd"))
        return losses, outputs, features

    def _train_proposals(self, batch, training):
        """RPN losses and training proposals: (losses dict, proposals, FPN features)."""
        losses, outputs, features = self._rpn_losses(batch, training)
        return losses, self.rpn.proposals(outputs, image_sizes_of(batch), training=True), features

    def _test_proposals(self, images, image_sizes):
        """Inference proposals and the FPN features."""
        features = self.features(images, training=False)
        return self.rpn.proposals(self._rpn_outputs(features), image_sizes, training=False), features

    def compute_losses(self, batch, training=True):
        return self._rpn_losses(batch, training)[0]

    def detect(self, images, image_sizes):
        return proposal_outputs(self._test_proposals(images, image_sizes)[0])
