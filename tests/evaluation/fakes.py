"""Detections derived from ground truth, as a detector would output them (padded, network pixels)."""

import numpy as np


def box_relative_masks(full_masks, boxes, size):
    """[N, size, size] float: each full-image mask sampled (nearest) at the cell centres of its box."""
    out = np.zeros((len(boxes), size, size), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        xs = np.floor(x1 + (np.arange(size) + 0.5) * (x2 - x1) / size).astype(int)
        ys = np.floor(y1 + (np.arange(size) + 0.5) * (y2 - y1) / size).astype(int)
        h, w = full_masks[i].shape
        out[i] = full_masks[i][np.clip(ys, 0, h - 1)][:, np.clip(xs, 0, w - 1)]
    return out


def gt_outputs(reader, records, scales, max_detections=8, jitter=0.0, mask_size=0, keypoints=False, seed=0,
               drop=0):
    """Padded outputs for `records` whose detections are the ground truth (optionally jittered by up
    to `jitter` pixels, and with the last `drop` instances of each image missing), scaled by
    `scales` [B, 2] (sy, sx) into the network input. Returns (outputs, image_info, image_ids)."""
    rng = np.random.default_rng(seed)
    b, d = len(records), max_detections
    outputs = {"num_detections": np.zeros([b], np.int32), "detection_boxes": np.zeros([b, d, 4], np.float32),
               "detection_scores": np.zeros([b, d], np.float32), "detection_classes": -np.ones([b, d], np.int32)}
    if mask_size:
        outputs["detection_masks"] = np.zeros([b, d, mask_size, mask_size], np.float32)
    if keypoints:
        outputs["detection_keypoints"] = np.zeros([b, d, reader.num_keypoints, 3], np.float32)
    info = np.zeros([b, 3, 2], np.float32)
    for i, rec in enumerate(records):
        sy, sx = scales[i]
        info[i] = [[rec.height, rec.width], [sy, sx], [round(rec.height * sy), round(rec.width * sx)]]
        n = min(rec.num_instances - drop, d)
        boxes = rec.boxes[:n].astype(np.float64)
        boxes = boxes + rng.uniform(-jitter, jitter, boxes.shape)
        boxes = np.clip(boxes, 0, [rec.width, rec.height] * 2)
        outputs["num_detections"][i] = n
        outputs["detection_boxes"][i, :n] = boxes * [sx, sy, sx, sy]
        outputs["detection_scores"][i, :n] = rng.uniform(0.3, 1.0, n)
        outputs["detection_classes"][i, :n] = rec.classes[:n]
        if mask_size:
            outputs["detection_masks"][i, :n] = box_relative_masks(reader.load_masks(rec)[:n], boxes, mask_size)
        if keypoints:
            kps = rec.keypoints[:n].copy()
            kps[..., 0] *= sx
            kps[..., 1] *= sy
            kps[..., 2] = 1.0
            outputs["detection_keypoints"][i, :n] = kps
    return outputs, info, np.array([r.image_id for r in records], np.int64)


def make_gt_detector(reader, offset=0.0, max_detections=8, extra_weight_shape=None, seed=0):
    """A Keras model whose detections are the ground truth of the image (looked up by image_id) shifted by
    a trainable `offset` (pixels of the original image) and scaled into the network input by valid size /
    original size. Input: {"images", "image_info" [B, 2] valid (h, w) (the detectors' convention),
    "image_id"}. `extra_weight_shape` adds a weight so that its checkpoints fit no other fake."""
    import keras
    import tensorflow as tf

    recs = reader.records
    rng = np.random.default_rng(seed)
    n_img, d = len(recs), max_detections
    boxes, scores = np.zeros([n_img, d, 4], np.float32), np.zeros([n_img, d], np.float32)
    classes = -np.ones([n_img, d], np.int32)
    for i, r in enumerate(recs):
        n = min(r.num_instances, d)
        boxes[i, :n], classes[i, :n], scores[i, :n] = r.boxes[:n], r.classes[:n], rng.uniform(0.5, 1.0, n)
    ids = np.array([r.image_id for r in recs], np.int64)
    sizes = np.array([[r.height, r.width] for r in recs], np.float32)

    class Fake(keras.Model):
        def __init__(self):
            super().__init__()
            self.offset = self.add_weight(shape=(), initializer=keras.initializers.Constant(offset), name="offset")
            if extra_weight_shape is not None:
                self.extra = self.add_weight(shape=extra_weight_shape, initializer="zeros", name="extra")

        def call(self, inputs, training=False):
            idx = tf.searchsorted(tf.constant(ids), tf.cast(inputs["image_id"], tf.int64))
            original = tf.gather(tf.constant(sizes), idx)
            valid = tf.cast(inputs["image_info"], tf.float32)
            sy, sx = valid[:, 0] / original[:, 0], valid[:, 1] / original[:, 1]
            scale = tf.stack([sx, sy, sx, sy], -1)[:, None, :]
            cls = tf.gather(tf.constant(classes), idx)
            return {"num_detections": tf.reduce_sum(tf.cast(cls >= 0, tf.int32), 1),
                    "detection_boxes": (tf.gather(tf.constant(boxes), idx) + self.offset) * scale,
                    "detection_scores": tf.gather(tf.constant(scores), idx), "detection_classes": cls}

    model = Fake()
    model({"images": tf.zeros([1, 32, 32, 3]), "image_info": tf.constant([sizes[0]]), "image_id": tf.constant(ids[:1])})
    return model


def save_as_saved_model(model, path):
    """Saves a fake detector as a SavedModel whose serving_default takes the PredictFn inputs (images,
    image_info [B, 2], image_id), as tfdet.evaluation.loaders.saved_model_predict_fn calls it."""
    import tensorflow as tf

    class Export(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
                                      tf.TensorSpec([None, 2], tf.float32, name="image_info"),
                                      tf.TensorSpec([None], tf.int64, name="image_id")])
        def serve(self, images, image_info, image_id):
            return self.model({"images": images, "image_info": image_info, "image_id": image_id})

    module = Export(model)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
