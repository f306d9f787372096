"""Reference fixtures of the torchvision detectors, in the side environment (torch + torchvision).

    /work/side/ref/bin/python -m tools.zoo_reference.torchvision_ref [--only NAME ...] [--out DIR]

(without --only it also writes ops.npz: tools/zoo_reference/torchvision_ops_ref.py)

For each model: build the architecture of the released COCO checkpoint (v1: FrozenBatchNorm2d backbone
with eps 0, as `weights=COCO_V1` loads it; v2: BatchNorm2d / GroupNorm heads), fill it with the synthetic
weights of tfdet/zoo/synthetic.py, calibrate every BN on a calibration image, scale the classifiers so
scores spread (the scale goes into the meta as `overrides`), then run two test images of different
sizes as one batch and store every stage (tools/zoo_reference/README.md has the layout).
"""

import argparse
import time

import numpy as np
import torch
import torchvision
from torchvision.models import resnet50
from torchvision.models.detection import (FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet, fasterrcnn_resnet50_fpn_v2,
                                          maskrcnn_resnet50_fpn_v2, retinanet_resnet50_fpn_v2)
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from tools.zoo_reference import common, torchvision_ops_ref

IMAGES = [((112, 157), 1), ((150, 118), 13)]  # (height, width), seed: 157 * 224/157 = 223.99.. -> 223 px
CALIBRATION_IMAGES = [((128, 144), 3), ((144, 120), 4), ((120, 160), 5)]  # one batch, never a test image
SIZE = dict(min_size=160, max_size=224)  # small inputs; the 800/1333 rule itself is unchanged


def _v1_backbone(**extractor_kwargs):
    return _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, **extractor_kwargs)


def _frozen_eps0(model):
    overwrite_eps(model, 0.0)  # what the COCO_V1 weights of every v1 builder do after loading
    return model


V1 = "_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3{extra})"
MODELS = {
    "fasterrcnn_resnet50_fpn": dict(
        kind="rcnn", seed=1701,
        build=lambda kw: _frozen_eps0(FasterRCNN(_v1_backbone(), num_classes=91, **kw)),
        builder=f"FasterRCNN({V1.format(extra='')}, num_classes=91, **settings); overwrite_eps(model, 0.0)"),
    "fasterrcnn_resnet50_fpn_v2": dict(
        kind="rcnn", seed=1702,
        build=lambda kw: fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kw),
        builder="fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **settings)"),
    "maskrcnn_resnet50_fpn": dict(
        kind="rcnn", seed=1703, alone=True,
        build=lambda kw: _frozen_eps0(MaskRCNN(_v1_backbone(), num_classes=91, **kw)),
        builder=f"MaskRCNN({V1.format(extra='')}, num_classes=91, **settings); overwrite_eps(model, 0.0)"),
    "maskrcnn_resnet50_fpn_v2": dict(
        kind="rcnn", seed=1704,
        build=lambda kw: maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kw),
        builder="maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **settings)"),
    "keypointrcnn_resnet50_fpn": dict(
        kind="rcnn", seed=1705,
        # two classes: a softmax of logits with std 2.5 would put every top-100 score above 0.99
        calibration={"roi_heads.box_predictor.cls_score": {"std": 1.0, "center": True}},
        build=lambda kw: _frozen_eps0(KeypointRCNN(_v1_backbone(), num_classes=2, num_keypoints=17, **kw)),
        builder=(f"KeypointRCNN({V1.format(extra='')}, num_classes=2, num_keypoints=17, **settings); "
                 "overwrite_eps(model, 0.0)")),
    "retinanet_resnet50_fpn": dict(
        kind="retina", seed=1716,  # seed 1706: a score gap of 1.3e-6 at a top-1000 cut
        build=lambda kw: _frozen_eps0(RetinaNet(_v1_backbone(returned_layers=[2, 3, 4],
                                                             extra_blocks=LastLevelP6P7(256, 256)), 91, **kw)),
        builder=(f"RetinaNet({V1.format(extra=', returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)')}"
                 ", 91, **settings); overwrite_eps(model, 0.0)")),
    "retinanet_resnet50_fpn_v2": dict(
        kind="retina", seed=1707,
        build=lambda kw: retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kw),
        builder="retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **settings)"),
}
# What each conv / linear outside the backbone body is calibrated to (default: output std 1).
# Classifiers: logits spread (std 2.5 within each class) around a per-class centre, so that scores are
# informative and labels varied; box deltas moderate, so that boxes stay well-formed.
CLASSIFIER = {"std": 2.5, "center": True}
CALIBRATION = {
    # RPN: the best objectness logits must stay below ~5, or sigmoid rounds them to the same float32
    # score (1.0) and the order of tied proposals (their NMS) is arbitrary
    "rpn.head.cls_logits": {"std": 1.5, "center": True, "bias": -3.0},
    "roi_heads.box_predictor.cls_score": CLASSIFIER,
    # RetinaNet: sigmoid scores of ~10^5 (anchor, class) pairs per level; its top 1000 (z ~ 3) must not
    # saturate at 1.0 (ties), hence a lower mean and a narrower spread than torchvision's prior init.
    "head.classification_head.cls_logits": {"std": 1.7, "center": True, "bias": -7.5},
    "roi_heads.mask_predictor.mask_fcn_logits": {"std": 2.5},
    "roi_heads.keypoint_predictor.kps_score_lowres": {"std": 2.5},
    "rpn.head.bbox_pred": {"std": 0.5}, "head.regression_head.bbox_reg": {"std": 0.5},
    "roi_heads.box_predictor.bbox_pred": {"std": 1.0},
}


def scale_targets(model, extra=None):
    """{module path: calibration spec} for every conv / linear outside the backbone body."""
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    specs = {**CALIBRATION, **(extra or {})}
    return {name: specs.get(name, {"std": 1.0}) for name, m in model.named_modules()
            if isinstance(m, kinds) and not name.startswith("backbone.body.")}


def legacy_keys(keys):
    """{current key: key in the released v1 COCO .pth files}, for the keys torchvision renamed after
    those files were written (its _load_from_state_dict upgrade hooks map them back)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        if key.startswith("rpn.head.conv.0.0."):  # RPNHead v1
            out[key] = "rpn.head.conv." + parts[-1]
        elif key.startswith(("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.")) and parts[4] == "0":
            out[key] = ".".join(parts[:4] + parts[5:])  # FeaturePyramidNetwork v1
        elif key.startswith("roi_heads.mask_head.") and parts[3] == "0":
            out[key] = f"roi_heads.mask_head.mask_fcn{int(parts[2]) + 1}.{parts[-1]}"  # MaskRCNNHeads v1
        elif key.startswith(("head.classification_head.conv.", "head.regression_head.conv.")):
            out[key] = ".".join(parts[:3] + [str(2 * int(parts[3]))] + parts[5:])  # RetinaNet heads v1
    return out


def to_input(image):
    """uint8 HWC -> the float CHW [0, 1] tensor torchvision detectors take."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def split_levels(flat, sizes, per_location):
    """[N, sum(H*W*A), D] (torchvision's concatenated level outputs) -> per level [N, H, W, A * D]."""
    out, start = [], 0
    for h, w in sizes:
        count = h * w * per_location
        out.append(flat[:, start:start + count].reshape(flat.shape[0], h, w, -1))
        start += count
    return out


class Capture:
    """Records the stages of one forward of a torchvision detector (hooks + a wrapped method)."""

    def __init__(self, model, kind):
        paths = {"transform": "transform", "body": "backbone.body", "fpn": "backbone.fpn"}
        if kind == "rcnn":
            paths.update(rpn_head="rpn.head", anchors="rpn.anchor_generator", box_pool="roi_heads.box_roi_pool",
                         box_head="roi_heads.box_head", box_predictor="roi_heads.box_predictor",
                         roi_heads="roi_heads")
            for part in ("mask", "keypoint"):
                if getattr(model.roi_heads, f"{part}_head", None) is not None:
                    paths.update({f"{part}_pool": f"roi_heads.{part}_roi_pool",
                                  f"{part}_head": f"roi_heads.{part}_head",
                                  f"{part}_predictor": f"roi_heads.{part}_predictor"})
            self._wrap(model.rpn, "filter_proposals", "proposals")
        else:
            paths.update(head="head", anchors="anchor_generator")
            self._wrap(model, "postprocess_detections", "detections")
        self.recorder = common.Recorder(model, paths)
        self.outputs = self.recorder.outputs

    def _wrap(self, owner, method, stage):
        original = getattr(owner, method)

        def wrapped(*args, **kwargs):
            out = original(*args, **kwargs)
            self.outputs.setdefault(stage, []).append(common.snapshot(out))
            self.outputs.setdefault(f"{stage}_args", []).append(common.snapshot((args, kwargs)))
            return out

        self.original = original

        setattr(owner, method, wrapped)
        self._restore = lambda: delattr(owner, method)

    def close(self):
        self.recorder.close()
        self._restore()


def store_stages(arrays, out, kind, results, raw_images):
    """Every stage of one captured forward into `arrays` (names in tools/zoo_reference/README.md)."""
    put = common.put
    image_list = out["transform"][0][0]
    put(arrays, "stage/transform/images", image_list.tensors, nchw=True)
    arrays["input/image_sizes"] = np.array(image_list.image_sizes, np.int32)
    arrays["input/padded_size"] = np.array(image_list.tensors.shape[-2:], np.int32)
    arrays["input/original_sizes"] = np.array([im.shape[:2] for im in raw_images], np.int32)
    body, fpn = out["body"][0], out["fpn"][0]
    first_c = 5 - len(body) + 1
    for i, c in enumerate(body.values()):
        put(arrays, f"stage/backbone/c{first_c + i}", c, nchw=True)
    names = [f"p{first_c + i}" for i in range(len(fpn))]
    for name, p in zip(names, fpn.values()):
        put(arrays, f"stage/fpn/{name}", p, nchw=True)
    sizes = [tuple(p.shape[-2:]) for p in fpn.values()]
    anchors = out["anchors"][0][0]  # the same for every image
    num_anchors = anchors.shape[0] // sum(h * w for h, w in sizes)
    start = 0
    for name, (h, w) in zip(names, sizes):
        count = h * w * num_anchors
        put(arrays, f"stage/anchors/{name}", anchors[start:start + count])
        start += count
    if kind == "rcnn":
        logits, deltas = out["rpn_head"][0]
        for name, o, d in zip(names, logits, deltas):
            put(arrays, f"stage/rpn/objectness/{name}", o, nchw=True)
            put(arrays, f"stage/rpn/deltas/{name}", d, nchw=True)
        boxes, scores = out["proposals"][0]
        for i, (b, s) in enumerate(zip(boxes, scores)):
            put(arrays, f"stage/rpn/proposals/{i}", b)
            put(arrays, f"stage/rpn/proposal_scores/{i}", s)
        put(arrays, "stage/box/roi_features", out["box_pool"][0], nchw=True)
        put(arrays, "stage/box/head", out["box_head"][0])
        cls_logits, box_deltas = out["box_predictor"][0]
        put(arrays, "stage/box/cls_logits", cls_logits)
        put(arrays, "stage/box/deltas", box_deltas)
        detections = out["roi_heads"][0][0]
    else:
        head = out["head"][0]
        cls = split_levels(head["cls_logits"], sizes, num_anchors)
        reg = split_levels(head["bbox_regression"], sizes, num_anchors)
        for name, c, r in zip(names, cls, reg):
            put(arrays, f"stage/retina/cls_logits/{name}", c)
            put(arrays, f"stage/retina/deltas/{name}", r)
        detections = out["detections"][0]
    for i, det in enumerate(detections):
        for key in ("boxes", "scores", "labels"):
            put(arrays, f"stage/detections/{i}/{key}", det[key])
        if "keypoints" in det:
            put(arrays, f"stage/detections/{i}/keypoints", det["keypoints"])
            put(arrays, f"stage/detections/{i}/keypoints_scores", det["keypoints_scores"])
    labels = torch.cat([det["labels"] for det in detections])
    for part in ("mask", "keypoint"):
        if f"{part}_head" not in out:
            continue
        put(arrays, f"stage/{part}/roi_features", out[f"{part}_pool"][0], nchw=True)
        put(arrays, f"stage/{part}/head", out[f"{part}_head"][0], nchw=True)
        put(arrays, f"stage/{part}/logits", out[f"{part}_predictor"][0], nchw=True)
    if "mask_head" in out:
        logits = out["mask_predictor"][0]
        put(arrays, "stage/mask/det_logits", logits[torch.arange(len(labels)), labels])
    store_outputs(arrays, results, "stage/output")
    return names


def store_outputs(arrays, results, prefix):
    """The final outputs (original-image pixels) of each image i under `prefix`/i/."""
    for i, res in enumerate(results):
        for key in ("boxes", "scores", "labels", "keypoints", "keypoints_scores"):
            if key in res:
                common.put(arrays, f"{prefix}/{i}/{key}", res[key])
        if "masks" in res:
            masks = res["masks"].numpy() > 0.5  # [N, 1, H, W] pasted probabilities
            arrays[f"{prefix}/{i}/masks_packbits"] = np.packbits(masks.reshape(-1))
            arrays[f"{prefix}/{i}/masks_shape"] = np.array(masks.shape, np.int32)


@torch.no_grad()
def store_alone(arrays, model, image):
    """`alone/`: the first test image run alone, padded to its own multiple of 32 (the batch of two pads
    to the largest image: another size, and with strides from the padded size other P6 anchors), for
    serving's batch padding (tests/zoo/test_torchvision_export.py)."""
    image_list, _ = model.transform([to_input(image)])
    arrays["alone/input/image_sizes"] = np.array(image_list.image_sizes, np.int32)
    arrays["alone/input/padded_size"] = np.array(image_list.tensors.shape[-2:], np.int32)
    store_outputs(arrays, model([to_input(image)]), "alone/output")


def _gap_at(values, k):
    """values sorted descending: values[k - 1] - values[k] (inf when there are at most k)."""
    v = np.sort(np.asarray(values, np.float64).reshape(-1))[::-1]
    return float(v[k - 1] - v[k]) if v.size > k else float("inf")


@torch.no_grad()
def selection_margins(model, kind, out, capture):
    """Score gaps at every top-k cut of the post-processing (a gap below the float noise of a
    reimplementation would let it pick a different set): {cut: smallest gap over images / levels}."""
    gaps = {}
    if kind == "rcnn":
        rpn = model.rpn
        logits = [o.flatten(1) for o in out["rpn_head"][0][0]]  # per level [N, H*W*A]
        k = rpn.pre_nms_top_n()
        gaps["rpn pre-NMS top-k per level"] = min(_gap_at(lv[i], k) for lv in logits for i in range(lv.shape[0]))
        (args, kwargs), post = out["proposals_args"][0], rpn._post_nms_top_n["testing"]
        rpn._post_nms_top_n["testing"] = post + 1
        _, scores = capture.original(*args, **kwargs)
        rpn._post_nms_top_n["testing"] = post
        gaps["rpn post-NMS top-n"] = min(_gap_at(s_, post) for s_ in scores)
        heads, keep = model.roi_heads, model.roi_heads.detections_per_img
        cls_logits, box_deltas = out["box_predictor"][0]
        proposals, _ = out["proposals"][0]
        image_sizes = out["transform"][0][0].image_sizes
        heads.detections_per_img = keep + 1
        _, scores, _ = heads.postprocess_detections(cls_logits, box_deltas, proposals, image_sizes)
        heads.detections_per_img = keep
        gaps["box detections per image"] = min(_gap_at(s_, keep) for s_ in scores)
        gaps["box score threshold"] = min(float((s_ - heads.score_thresh).abs().min()) for s_ in scores if len(s_))
    else:
        k = model.topk_candidates
        head, sizes = out["head"][0], [tuple(p.shape[-2:]) for p in out["fpn"][0].values()]
        num_anchors = head["cls_logits"].shape[1] // sum(h * w for h, w in sizes)
        levels = split_levels(torch.sigmoid(head["cls_logits"]), sizes, num_anchors)
        kept = [lv[i][lv[i] > model.score_thresh] for lv in levels for i in range(lv.shape[0])]
        gaps["retina top-k per level"] = min(_gap_at(v, k) for v in kept)
        (args, kwargs), keep = out["detections_args"][0], model.detections_per_img
        model.detections_per_img = keep + 1
        dets = capture.original(*args, **kwargs)
        model.detections_per_img = keep
        gaps["retina detections per image"] = min(_gap_at(d["scores"], keep) for d in dets)
        gaps["retina score threshold"] = min(float((d["scores"] - model.score_thresh).abs().min())
                                             for d in out["detections"][0] if len(d["scores"]))
    return gaps


def make_fixture(name, spec, settings):
    torch.manual_seed(0)
    model = spec["build"](dict(settings)).eval()
    calib = [common.synthetic.synthetic_image(h, w, seed=s) for (h, w), s in CALIBRATION_IMAGES]
    images = [common.synthetic.synthetic_image(h, w, seed=s) for (h, w), s in IMAGES]
    run_calib = lambda: model([to_input(im) for im in calib])  # noqa: E731
    with torch.no_grad():
        residual = common.residual_gamma_overrides(common.state_dict_shapes(model))
        shapes = common.load_synthetic_weights(model, spec["seed"], residual)
        targets = scale_targets(model, spec.get("calibration"))
        with common.calibrating_norms(model), common.calibrating_scales(model, targets) as calibrated:
            run_calib()
        overrides = {**residual, **common.scale_overrides(calibrated, shapes)}
        common.load_synthetic_weights(model, spec["seed"], overrides)
        with common.calibrating_norms(model) as never:  # again, on exactly the synthesized weights
            run_calib()
        if never:
            raise RuntimeError(f"{name}: BN layers not reached by the calibration images: {never}")
        capture = Capture(model, spec["kind"])
        start = time.perf_counter()
        results = model([to_input(im) for im in images])
        seconds = time.perf_counter() - start
        capture.close()
        margins = selection_margins(model, spec["kind"], capture.outputs, capture)
    arrays = common.buffers_to_store(model)
    for i, im in enumerate(images):
        arrays[f"input/images/{i}"] = im
    levels = store_stages(arrays, capture.outputs, spec["kind"], results, images)
    if spec.get("alone"):
        store_alone(arrays, model, images[0])
    meta = {
        "source": "torchvision", "torchvision_version": torchvision.__version__, "torch_version": torch.__version__,
        "model": name, "layout": "tv", "builder": spec["builder"], "settings": settings,
        "seed": spec["seed"], "overrides": overrides, "keys": shapes, "legacy_keys": legacy_keys(shapes),
        "frozen_bn_eps": 0.0 if "overwrite_eps" in spec["builder"] else None,
        "images": [{"height": h, "width": w, "seed": s} for (h, w), s in IMAGES],
        "calibration_images": [{"height": h, "width": w, "seed": s} for (h, w), s in CALIBRATION_IMAGES],
        "levels": levels, "calibration": {**CALIBRATION, **spec.get("calibration", {})},
        "stages": sorted({k.rsplit("/", 1)[0] if k.endswith(("/sample", "/stats")) else k
                          for k in arrays if k.startswith("stage/")}),
        "label_space": ("torchvision COCO, 91 ids with 0 = background ('__background__'), N/A ids kept"
                        if name != "keypointrcnn_resnet50_fpn" else "0 = no person, 1 = person"),
    }
    return meta, arrays, results, seconds, margins


def report(name, arrays, results, seconds, size, margins):
    print(f"== {name}: {size / 1024:.0f} KiB, forward {seconds:.2f} s (torch {torch.get_num_threads()} threads)")
    for line in common.stage_summary(arrays):
        print("   " + line)
    for i, res in enumerate(results):
        hist, gap, small = common.score_summary(res["scores"].numpy())
        labels = res["labels"].numpy()
        print(f"   image {i}: {len(labels)} detections, {len(set(labels.tolist()))} labels, scores {hist}, "
              f"min gap {gap:.2e} ({small} gaps < 1e-3)")
    print("   score gaps at the cuts: " + ", ".join(f"{k} {v:.2e}" for k, v in margins.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(MODELS))
    parser.add_argument("--out", default=str(common.FIXTURES / "torchvision"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.only or MODELS:
        settings = dict(SIZE)
        meta, arrays, results, seconds, margins = make_fixture(name, MODELS[name], settings)
        size = common.write_fixture(f"{args.out}/{name}.npz", meta, arrays)
        report(name, arrays, results, seconds, size, margins)
    if args.only is None:
        torchvision_ops_ref.main(args.out)


if __name__ == "__main__":
    main()
