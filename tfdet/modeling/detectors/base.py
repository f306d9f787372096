"""The detector: a keras.Model composed of parts, each built from its config block, no loss math.

    backbone      model.backbone (BACKBONES by type)
    neck          model.neck     (NECKS by type; "FPN" when absent)
    proposal head model.rpn      (PROPOSAL_HEADS: RPN, GARPN)             optional
    RoI head      model.roi      (ROI_HEADS: standard, cascade, htc) on the proposals; it reads its own
                  blocks too (model.mask, model.keypoint, model.cascade, model.htc)   optional, needs rpn
    dense head    model.retina   (DENSE_HEADS: Retina, GARetina)           instead of rpn / roi
A detector with only a proposal head outputs its proposals (class 0, objectness scores).

Detectors expose `compute_losses(batch, training)` -> {name: scalar} and `detect(images, image_sizes)`
-> outputs dict (tfdet.modeling.batch documents both formats); `call` is `detect` on a batch or images.
Training belongs to tfdet.engine (Trainer / train): Keras' `fit` on a detector itself is refused.
The named detectors (FasterRCNN, MaskRCNN, ...) are this class with the blocks their family needs;
`Detector` itself takes any combination. Model-level keys other than these blocks and the ones in
MODEL_DEFAULTS are refused, naming the key.
"""

import keras
import ml_collections
import tensorflow as tf

from tfdet.modeling.backbones import build_backbone
from tfdet.modeling.batch import detection_outputs, image_sizes_of, proposal_outputs
from tfdet.modeling.dense_heads import build_retina, build_rpn
from tfdet.modeling.necks import build_neck
from tfdet.modeling.registry import as_dict, register_detector
from tfdet.modeling.roi_heads import build_roi_head

# ImageNet statistics of RGB 0..255 images (torchvision / mmdetection "pytorch style" backbones).
MODEL_DEFAULTS = dict(type="Detector", num_classes=None, backbone=None, neck=dict(type="FPN"),
                      pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375),
                      ops_impl=None,  # every custom op of the model: None (fused when loaded) | fused | composite
                      # True: pixels outside each image's valid size are 0 AFTER normalizing (torchvision pads
                      # normalized images with zeros); False: padding is normalized like the image
                      zero_padding_after_normalize=False)
PART_BLOCKS = ("rpn", "roi", "retina")
ROI_BLOCKS = ("mask", "keypoint", "cascade", "htc")


def zero_outside(images, image_sizes):
    """[B, H, W, C] images with every pixel outside its image's [B, 2] valid (height, width) set to 0."""
    sizes = tf.cast(image_sizes, tf.int32)
    rows = tf.range(tf.shape(images)[1])[None, :, None] < sizes[:, 0, None, None]
    cols = tf.range(tf.shape(images)[2])[None, None, :] < sizes[:, 1, None, None]
    return tf.where((rows & cols)[..., None], images, tf.zeros_like(images))


@register_detector("Detector")
@keras.saving.register_keras_serializable(package="tfdet")
class Detector(keras.Model):
    """Backbone + neck + the parts whose blocks the model config has. `config` is the model
    ConfigDict (or a plain dict)."""

    blocks = PART_BLOCKS + ROI_BLOCKS   # the part blocks this class takes
    required = ()                       # ... and must have
    roi_type = "standard"               # the RoI head when model.roi has no type

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        config = ml_collections.ConfigDict(as_dict(config))
        self._check_blocks(config)
        self.model_config = config
        self.num_classes = int(config.num_classes)
        impl = config.get("ops_impl")
        backbone = as_dict(config.backbone)
        if backbone.get("dcn"):
            backbone["dcn"] = {**backbone["dcn"], "impl": impl}
        self.backbone = build_backbone(backbone)
        self.neck = build_neck(config.get("neck", MODEL_DEFAULTS["neck"]), impl=impl)
        self.pixel_mean = tf.constant(config.get("pixel_mean", MODEL_DEFAULTS["pixel_mean"]), tf.float32)
        self.pixel_std = tf.constant(config.get("pixel_std", MODEL_DEFAULTS["pixel_std"]), tf.float32)
        self.zero_padding = bool(config.get("zero_padding_after_normalize",
                                            MODEL_DEFAULTS["zero_padding_after_normalize"]))
        self.rpn = self.roi_head = self.retina = None
        if config.get("rpn") is not None:
            self.rpn = build_rpn(config.rpn)
            self.rpn_head = self.rpn.make_head("rpn_head", impl=impl)
        if config.get("roi") is not None:
            self.roi_head = build_roi_head(config, self.num_classes, impl, default_type=self.roi_type)
            unread = [b for b in ROI_BLOCKS if config.get(b) is not None and b not in self.roi_head.model_blocks]
            if unread:
                raise ValueError(f"model.{unread[0]}: the RoI head {type(self.roi_head).__name__} does not use this "
                                 f"block (it reads {list(self.roi_head.model_blocks)}).")
            for name, layer in self.roi_head.layers.items():
                setattr(self, name, layer)  # tracked by Keras under the names they always had (checkpoint keys)
        if config.get("retina") is not None:
            self.retina = build_retina(config.retina, self.num_classes)
            self.head = self.retina.make_head("retina_head", impl=impl)

    def _check_blocks(self, config):
        name = type(self).__name__
        allowed = set(MODEL_DEFAULTS) | set(self.blocks)
        unknown = sorted(k for k in config if k not in allowed)
        if unknown:
            extra = [k for k in unknown if k in PART_BLOCKS + ROI_BLOCKS]
            hint = (f"{name} has no {extra} part (model.type 'Detector' composes any parts)" if extra
                    else f"known: {sorted(allowed)}")
            raise ValueError(f"model: unknown field(s) {unknown} for {name}; {hint}.")
        missing = [k for k in ("num_classes", "backbone") + tuple(self.required) if config.get(k) is None]
        if missing:
            raise ValueError(f"model: {name} needs the field(s) {missing}.")
        num_classes = config.num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"model.num_classes must be a positive integer (object classes, background not "
                             f"counted), got {num_classes!r}.")
        if config.get("retina") is not None and (config.get("rpn") is not None or config.get("roi") is not None):
            raise ValueError("model: a dense head (model.retina) replaces the proposal and RoI heads; drop "
                             "model.rpn / model.roi, or model.retina.")
        if config.get("roi") is not None and config.get("rpn") is None:
            raise ValueError("model.roi: a RoI head needs proposals: add a model.rpn block.")
        if config.get("rpn") is None and config.get("retina") is None:
            raise ValueError("model: no head; add model.rpn (+ model.roi) or model.retina.")

    # Parts -------------------------------------------------------------------------------------------
    def features(self, images, training=False, image_sizes=None):
        """{level: [B, H_l, W_l, C]} neck features of raw 0..255 images ([B, 2] valid (height, width)
        image_sizes: needed with model.zero_padding_after_normalize)."""
        images = (tf.cast(images, tf.float32) - self.pixel_mean) / self.pixel_std
        if self.zero_padding:
            if image_sizes is None:
                raise ValueError("model.zero_padding_after_normalize needs the images' valid sizes: call "
                                 "features(images, image_sizes=...).")
            images = zero_outside(images, image_sizes)
        return {int(k): v for k, v in self.neck(self.backbone(images, training=training)).items()}

    def _features_of(self, images, training, image_sizes):
        """features() of a batch; image_sizes are passed only when the model needs them, so a subclass's
        features(images, training) written before that argument existed keeps working."""
        if self.zero_padding:
            return self.features(images, training=training, image_sizes=image_sizes)
        return self.features(images, training=training)

    def _head_outputs(self, spec_head, block, features):
        return spec_head([features[lvl] for lvl in block.levels])

    def compute_losses(self, batch, training=True):
        """{name: scalar loss} of a training batch (tfdet.modeling.batch)."""
        sizes = image_sizes_of(batch)
        features = self._features_of(batch["images"], training, sizes)
        crowd = batch.get("gt_is_crowd")
        if self.retina is not None:
            outputs = self._head_outputs(self.head, self.retina.block, features)
            return self.retina.losses(outputs, batch["gt_boxes"], batch["gt_classes"], sizes, gt_is_crowd=crowd)
        outputs = self._head_outputs(self.rpn_head, self.rpn.block, features)
        losses = self.rpn.losses(outputs, batch["gt_boxes"], batch["gt_classes"], sizes, gt_is_crowd=crowd)
        if self.roi_head is not None:
            proposals = self.rpn.proposals(outputs, sizes, training=True)
            losses.update(self.roi_head.losses(features, proposals, batch))
        return losses

    def detect(self, images, image_sizes):
        """Outputs dict (tfdet.modeling.batch) of raw 0..255 images with [B, 2] valid (height, width)."""
        features = self._features_of(images, False, image_sizes)
        if self.retina is not None:
            outputs = self._head_outputs(self.head, self.retina.block, features)
            return detection_outputs(self.retina.detections(outputs, image_sizes))
        proposals = self.rpn.proposals(self._head_outputs(self.rpn_head, self.rpn.block, features), image_sizes)
        if self.roi_head is None:
            return proposal_outputs(proposals)
        return self.roi_head.detect(features, proposals, image_sizes)

    # Keras -------------------------------------------------------------------------------------------
    def build(self, input_shape=None):
        """Creates every weight by running the inference path once on a small zero image."""
        if self.built:
            return
        self.detect(tf.zeros([1, 64, 64, 3]), tf.constant([[64.0, 64.0]]))
        self.built = True

    def call(self, inputs, training=False):
        batch = inputs if isinstance(inputs, dict) else {"images": inputs}
        return self.detect(batch["images"], image_sizes_of(batch))

    def train_step(self, data):
        raise TypeError("tfdet detectors train through tfdet.engine: tfdet.engine.Trainer(model, config.train)"
                        ".fit(dataset) or tfdet.engine.train(config, workdir) -- the recipe of bin/train.py "
                        "(SGD with warmup, step decay, weight decay, clipping) whichever door you take.")

    def test_step(self, data):
        raise TypeError("tfdet detectors compute validation losses through tfdet.engine.Trainer(model, "
                        "config.train).evaluate(dataset).")

    def predict_step(self, data):
        return self(data, training=False)

    def get_config(self):
        return {"config": self.model_config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config.pop("config"), **config)
