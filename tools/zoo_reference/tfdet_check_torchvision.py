"""PROTOTYPE (tfdet's venv, not the side env): today's tfdet layers and ops, wired by hand with the options
of torchvision_conventions.md, against the torchvision fixtures, stage by stage. It shows that the
catalogued conventions suffice; the converter (bin/convert.py) and the tests in tests/zoo replace it.

    .venv/bin/python -m tools.zoo_reference.tfdet_check_torchvision [NAME ...] [--eps 1e-5]

v1 models run to the end (detections, masks, keypoints); v2 models up to what tfdet has (backbone, FPN,
anchors): their heads need the NEW options.
"""

import argparse
import re

import numpy as np
import tensorflow as tf

from tests.zoo import fixtures_io
from tfdet.data import augment
from tfdet.layers.roi_align import MultiLevelRoIAlign
from tfdet.modeling.backbones.resnet import resnet
from tfdet.modeling.dense_heads.retina_head import RetinaHead
from tfdet.modeling.dense_heads.rpn import RPNHead
from tfdet.modeling.necks.fpn import FPN
from tfdet.ops import box_ops, nms, postprocess
from tfdet.ops.anchors import AnchorGenerator
from tfdet.zoo import synthetic

NAMES = ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
         "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2"]
RETINA_SIZES = [(s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512)]
DETECTION_ATOL = [1e-2] * 4 + [1e-4, 0]  # issue #17: boxes 1e-2 px, scores 1e-4, the same labels
BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


class Check:
    def __init__(self, arrays):
        self.arrays, self.failed = arrays, []

    def _run(self, stage, fn):
        try:
            fn()
            print(f"  ok    {stage}")
        except AssertionError as err:
            self.failed.append(stage)
            lines = [x for x in str(err).splitlines() if "Max abs" in x or "Mismatched" in x or ":" in x]
            print(f"  FAIL  {stage}: {' | '.join(lines)[:240]}")

    def __call__(self, stage, value, atol=1e-4):
        """|value - stored| <= 1e-4 relative + atol (element-wise on the stored elements)."""
        self._run(stage, lambda: fixtures_io.assert_stage(self.arrays, stage, np.asarray(value), rtol=1e-4,
                                                          atol=atol))

    def rows(self, stage, columns, atol):
        """The same set of rows (boxes, scores, labels side by side), in any order."""
        want = np.concatenate([np.asarray(self.arrays[f"{stage}/{k}"], np.float64).reshape(
            len(self.arrays[f"{stage}/{k}"]), -1) for k in columns], 1)
        got = np.concatenate([np.asarray(columns[k], np.float64).reshape(len(columns[k]), -1) for k in columns], 1)
        self._run(f"{stage}/{{{','.join(columns)}}} (as a set)",
                  lambda: fixtures_io.assert_same_rows(got, want, np.asarray(atol), stage))


def kernel(sd, key):
    return sd[key].transpose(2, 3, 1, 0)  # torch [O, I, kh, kw] (ConvTranspose [I, O, kh, kw]) -> TF


def preprocess(meta, arrays):
    """torchvision's transform: /255, normalize, resize (float64 floor rule), zero-pad to 32 after."""
    images, sizes = [], []
    for i in range(len(meta["images"])):
        raw = arrays[f"input/images/{i}"]
        h, w = (int(v) for v in augment.keep_ratio_size(*raw.shape[:2], meta["settings"]["min_size"],
                                                         meta["settings"]["max_size"], rule="torchvision"))
        x = tf.image.resize(tf.cast(raw, tf.float32) / 255.0, [h, w], method="bilinear")
        images.append((x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
        sizes.append((h, w))
    ph, pw = (-(-max(s[i] for s in sizes) // 32) * 32 for i in (0, 1))
    batch = tf.stack([tf.pad(x, [[0, ph - x.shape[0]], [0, pw - x.shape[1]], [0, 0]]) for x in images])
    return tf.cast(batch, tf.float32), sizes


def backbone(sd, batch, v2, levels, eps):
    body = resnet(50, norm="bn" if v2 else "frozen_bn", out_levels=levels)
    body(batch)
    for layer in body.layers:
        if hasattr(layer, "epsilon") and not v2:
            layer.epsilon = eps  # torchvision v1 COCO weights: FrozenBatchNorm2d eps 0
        prefix = "backbone.body." + re.sub(r"layer(\d)_(\d+)_", r"layer\1.\2.", layer.name).replace(
            "downsample_", "downsample.")
        for w in layer.weights:
            leaf = w.path.split("/")[-1]
            w.assign(kernel(sd, prefix + ".weight") if leaf == "kernel" else sd[f"{prefix}.{BN[leaf]}"])
    return body(batch)


def fpn(sd, feats, retina, v2):
    first = min(feats)
    neck = FPN(256, min_level=first, max_level=7 if retina else 6, extra="conv" if retina else "maxpool",
               extra_source="input" if retina and v2 else "output", norm="bn" if v2 and not retina else None)
    neck(feats)
    for i, lvl in enumerate(range(first, 6)):
        for kind, block in (("lateral", "inner_blocks"), ("output", "layer_blocks")):
            conv = next(c for c in neck.lateral_convs + neck.output_convs if c.name == f"{kind}{lvl}")
            conv.kernel.assign(kernel(sd, f"backbone.fpn.{block}.{i}.0.weight"))
            if conv.use_bias:
                conv.bias.assign(sd[f"backbone.fpn.{block}.{i}.0.bias"])
            for norm in (n for n in neck.norms if n.name == f"{kind}{lvl}_norm"):
                for leaf, key in BN.items():
                    getattr(norm, leaf).assign(sd[f"backbone.fpn.{block}.{i}.1.{key}"])
    for conv in neck.extra_convs:
        p = "p" + conv.name[-1]
        conv.kernel.assign(kernel(sd, f"backbone.fpn.extra_blocks.{p}.weight"))
        conv.bias.assign(sd[f"backbone.fpn.extra_blocks.{p}.bias"])
    return neck(feats)


def rpn(sd, maps, anchors, image_sizes, check):
    head = RPNHead(3, 256)
    head(maps)
    for layer, key in ((head.conv, "conv.0.0"), (head.cls, "cls_logits"), (head.reg, "bbox_pred")):
        layer.kernel.assign(kernel(sd, f"rpn.head.{key}.weight"))
        layer.bias.assign(sd[f"rpn.head.{key}.bias"])
    objectness, deltas = head(maps)
    batch, boxes, scores, groups = objectness[0].shape[0], [], [], []
    for level, (o, d, a, name) in enumerate(zip(objectness, deltas, anchors, check.levels)):
        check(f"stage/rpn/objectness/{name}", o)
        check(f"stage/rpn/deltas/{name}", d)
        logits = tf.reshape(o, [batch, -1])
        top, index = tf.math.top_k(logits, min(1000, logits.shape[1]))  # per level, on logits
        boxes.append(box_ops.decode_boxes(tf.gather(tf.reshape(d, [batch, -1, 4]), index, batch_dims=1),
                                          tf.gather(a, index), clip_below=False, max_shape=image_sizes))
        scores.append(tf.sigmoid(top))
        groups.append(tf.fill(tf.shape(index), level))
    boxes, scores = tf.concat(boxes, 1), tf.concat(scores, 1)
    scores = tf.where(box_ops.large_enough(boxes, 1e-3, inclusive=True), scores, float("-inf"))
    kept = nms.batched_nms(boxes, scores, 1000, 0.7, groups=tf.concat(groups, 1))
    for b in range(batch):
        n = int(tf.reduce_sum(tf.cast(kept.valid[b], tf.int32)))
        check.arrays[f"stage/rpn/{b}/boxes"] = check.arrays[f"stage/rpn/proposals/{b}"]  # for check.rows
        check.arrays[f"stage/rpn/{b}/scores"] = check.arrays[f"stage/rpn/proposal_scores/{b}"]
        check.rows(f"stage/rpn/{b}", {"boxes": kept.boxes[b, :n], "scores": kept.scores[b, :n]}, [1e-2] * 4 + [1e-4])


def padded(rows):
    out = np.zeros((len(rows), max(len(r) for r in rows), 4), np.float32)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return tf.constant(out)


def box_head(sd, maps, proposals, sizes, check):
    """fc6 columns permuted (C, H, W) -> (H, W, C); class 0 = background; weights (10, 10, 5, 5)."""
    pooled = MultiLevelRoIAlign(7, 2, 5, sampling_ratio=2, aligned=False)(maps, padded(proposals))
    flat = np.concatenate([pooled[b, :len(p)] for b, p in enumerate(proposals)])
    check("stage/box/roi_features", flat)
    fc6 = sd["roi_heads.box_head.fc6.weight"].reshape(1024, 256, 7, 7).transpose(2, 3, 1, 0).reshape(-1, 1024)
    h = tf.nn.relu(tf.reshape(flat, [len(flat), -1]) @ fc6 + sd["roi_heads.box_head.fc6.bias"])
    h = tf.nn.relu(h @ sd["roi_heads.box_head.fc7.weight"].T + sd["roi_heads.box_head.fc7.bias"])
    check("stage/box/head", h)
    cls = h @ sd["roi_heads.box_predictor.cls_score.weight"].T + sd["roi_heads.box_predictor.cls_score.bias"]
    reg = h @ sd["roi_heads.box_predictor.bbox_pred.weight"].T + sd["roi_heads.box_predictor.bbox_pred.bias"]
    check("stage/box/cls_logits", cls)
    check("stage/box/deltas", reg)
    start, classes = 0, cls.shape[1]
    for b, p in enumerate(proposals):
        n = len(p)
        scores = tf.nn.softmax(cls[start:start + n])[:, 1:]
        deltas = tf.reshape(reg[start:start + n], [n, classes, 4])[:, 1:]
        start += n
        boxes = box_ops.decode_boxes(deltas, tf.constant(p)[:, None], stds=(0.1, 0.1, 0.2, 0.2), clip_below=False,
                                     max_shape=sizes[b])
        scores = tf.where(box_ops.large_enough(boxes, 1e-2, inclusive=True) & (scores > 0.05), scores,
                          float("-inf"))
        labels = tf.reshape(tf.tile(tf.range(1, classes)[None], [n, 1]), [1, -1])
        kept = nms.batched_nms(tf.reshape(boxes, [1, -1, 4]), tf.reshape(scores, [1, -1]), 100, 0.5, groups=labels)
        m = int(tf.reduce_sum(tf.cast(kept.valid, tf.int32)))
        check.rows(f"stage/detections/{b}", {"boxes": kept.boxes[0, :m], "scores": kept.scores[0, :m],
                                              "labels": tf.gather(labels[0], kept.indices[0, :m])}, DETECTION_ATOL)


def mask_head(sd, maps, arrays, sizes, check):
    dets = [arrays[f"stage/detections/{b}/boxes"] for b in range(len(sizes))]
    pooled = MultiLevelRoIAlign(14, 2, 5, sampling_ratio=2, aligned=False)(maps, padded(dets))
    x = tf.constant(np.concatenate([pooled[b, :len(d)] for b, d in enumerate(dets)]))
    check("stage/mask/roi_features", x)
    for i in range(4):
        x = tf.nn.relu(tf.nn.conv2d(x, kernel(sd, f"roi_heads.mask_head.{i}.0.weight"), 1, "SAME")
                       + sd[f"roi_heads.mask_head.{i}.0.bias"])
    check("stage/mask/head", x)
    up = tf.nn.conv2d_transpose(x, kernel(sd, "roi_heads.mask_predictor.conv5_mask.weight"),
                                [x.shape[0], 28, 28, 256], 2)
    x = tf.nn.relu(up + sd["roi_heads.mask_predictor.conv5_mask.bias"])
    logits = (tf.nn.conv2d(x, kernel(sd, "roi_heads.mask_predictor.mask_fcn_logits.weight"), 1, "SAME")
              + sd["roi_heads.mask_predictor.mask_fcn_logits.bias"])
    check("stage/mask/logits", logits)
    labels = np.concatenate([arrays[f"stage/detections/{b}/labels"] for b in range(len(sizes))])
    chosen = tf.gather(tf.transpose(logits, [0, 3, 1, 2]), labels, batch_dims=1)
    check("stage/mask/det_logits", chosen)
    start = 0
    for b, d in enumerate(dets):
        original = tuple(int(v) for v in arrays["input/original_sizes"][b])
        boxes = postprocess.scale_to_original(d, sizes[b], original)
        check(f"stage/output/{b}/boxes", boxes, atol=1e-2)
        pasted = postprocess.paste_masks_torchvision(tf.sigmoid(chosen[start:start + len(d)])[None], boxes[None],
                                                     original).numpy()[0]
        start += len(d)
        want = np.unpackbits(arrays[f"stage/output/{b}/masks_packbits"])[:pasted.size].reshape(pasted.shape)
        union = (pasted | want).sum((1, 2))
        iou = np.where(union > 0, (pasted & want).sum((1, 2)) / np.maximum(union, 1), 1.0)
        print(f"  {'ok  ' if iou.min() >= 0.99 else 'FAIL'}  masks {b}: min IoU {iou.min():.4f}, "
              f"{np.mean(iou == 1):.0%} identical")


def keypoint_head(sd, maps, arrays, sizes, check):
    dets = [arrays[f"stage/detections/{b}/boxes"] for b in range(len(sizes))]
    pooled = MultiLevelRoIAlign(14, 2, 5, sampling_ratio=2, aligned=False)(maps, padded(dets))
    x = tf.constant(np.concatenate([pooled[b, :len(d)] for b, d in enumerate(dets)]))
    check("stage/keypoint/roi_features", x)
    for j in range(8):
        x = tf.nn.relu(tf.nn.conv2d(x, kernel(sd, f"roi_heads.keypoint_head.{2 * j}.weight"), 1, "SAME")
                       + sd[f"roi_heads.keypoint_head.{2 * j}.bias"])
    check("stage/keypoint/head", x)
    x = tf.nn.conv2d_transpose(x, kernel(sd, "roi_heads.keypoint_predictor.kps_score_lowres.weight"),
                               [x.shape[0], 28, 28, 17], 2) + sd["roi_heads.keypoint_predictor.kps_score_lowres.bias"]
    x = tf.image.resize(x, [56, 56], "bilinear")
    check("stage/keypoint/logits", x)
    start = 0
    for b, d in enumerate(dets):
        kp = postprocess.heatmaps_to_keypoints_torchvision(x[start:start + len(d)][None], d[None]).numpy()[0]
        start += len(d)
        check(f"stage/detections/{b}/keypoints", np.concatenate([kp[..., :2], np.ones_like(kp[..., 2:])], -1),
              atol=0.1)
        check(f"stage/detections/{b}/keypoints_scores", kp[..., 2])


def retina_head(sd, maps, anchors, sizes, check):
    head = RetinaHead(91, 9, 256)
    head(maps)
    for i in range(4):
        for layer, part in ((head.cls_convs[i], "classification_head"), (head.reg_convs[i], "regression_head")):
            layer.kernel.assign(kernel(sd, f"head.{part}.conv.{i}.0.weight"))
            layer.bias.assign(sd[f"head.{part}.conv.{i}.0.bias"])
    for layer, key in ((head.cls, "classification_head.cls_logits"), (head.reg, "regression_head.bbox_reg")):
        layer.kernel.assign(kernel(sd, f"head.{key}.weight"))
        layer.bias.assign(sd[f"head.{key}.bias"])
    cls, reg = head(maps)
    batch, boxes, scores, labels = cls[0].shape[0], [], [], []
    image_sizes = tf.constant(sizes, tf.int32)
    for c, r, a, name in zip(cls, reg, anchors, check.levels):
        check(f"stage/retina/cls_logits/{name}", c)
        check(f"stage/retina/deltas/{name}", r)
        anchor, label, score, valid = nms.top_candidates(tf.sigmoid(tf.reshape(c, [batch, -1, 91])), 1000, 0.05)
        deltas = tf.gather(tf.reshape(r, [batch, -1, 4]), anchor, batch_dims=1)
        boxes.append(box_ops.decode_boxes(deltas, tf.gather(a, anchor), clip_below=False, max_shape=image_sizes))
        scores.append(tf.where(valid, score, float("-inf")))
        labels.append(label)
    labels = tf.concat(labels, 1)
    kept = nms.batched_nms(tf.concat(boxes, 1), tf.concat(scores, 1), 300, 0.5, groups=labels)
    for b in range(batch):
        m = int(tf.reduce_sum(tf.cast(kept.valid[b], tf.int32)))
        check.rows(f"stage/detections/{b}", {"boxes": kept.boxes[b, :m], "scores": kept.scores[b, :m],
                                              "labels": tf.gather(labels[b], kept.indices[b, :m])}, DETECTION_ATOL)


def run(name, eps):
    print(f"== {name}")
    meta, arrays = fixtures_io.load("torchvision", name)
    sd = synthetic.synthetic_state_dict(meta["keys"], meta["seed"], meta["overrides"])
    sd.update({k[3:]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("bn/")})
    v2, retina = name.endswith("_v2"), name.startswith("retina")
    check = Check(arrays)
    batch, sizes = preprocess(meta, arrays)
    assert [tuple(s) for s in arrays["input/image_sizes"]] == sizes
    check("stage/transform/images", batch, atol=1e-5)
    feats = backbone(sd, batch, v2, (3, 4, 5) if retina else (2, 3, 4, 5), eps)
    for lvl in sorted(feats):
        check(f"stage/backbone/c{lvl}", feats[lvl])
    outs = fpn(sd, feats, retina, v2)
    check.levels = [f"p{lvl}" for lvl in sorted(outs)]
    for lvl in sorted(outs):
        check(f"stage/fpn/p{lvl}", outs[lvl])
    maps = [outs[lvl] for lvl in sorted(outs)]
    gen = AnchorGenerator([2 ** lvl for lvl in sorted(outs)], sizes=RETINA_SIZES if retina else
                          [(32,), (64,), (128,), (256,), (512,)], round_base=True, strides_from_image=True)
    anchors = gen([tuple(m.shape[1:3]) for m in maps], image_size=tuple(int(v) for v in batch.shape[1:3]))
    for lvl, a in zip(check.levels, anchors):
        check(f"stage/anchors/{lvl}", a, atol=0)
    if v2:
        print("  (v2 heads: NEW options, not in tfdet yet)")
    elif retina:
        retina_head(sd, maps, anchors, sizes, check)
    else:
        rpn(sd, maps, anchors, tf.constant(sizes, tf.int32), check)
        proposals = [arrays[f"stage/rpn/proposals/{b}"] for b in range(len(sizes))]  # continue from the reference
        p25 = {lvl: outs[lvl] for lvl in range(2, 6)}
        box_head(sd, p25, proposals, sizes, check)
        if name.startswith("mask"):
            mask_head(sd, p25, arrays, sizes, check)
        if name.startswith("keypoint"):
            keypoint_head(sd, p25, arrays, sizes, check)
    return check.failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=NAMES)
    parser.add_argument("--eps", type=float, default=0.0, help="FrozenBN epsilon of v1 models (torchvision: 0)")
    args = parser.parse_args()
    failed = {name: run(name, args.eps) for name in args.names}
    print("failed stages:", {k: v for k, v in failed.items() if v} or "none")


if __name__ == "__main__":
    main()
