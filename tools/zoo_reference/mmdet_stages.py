"""What an mmdetection fixture stores, by model kind (side environment; see mmdet_ref.py).

Stage names (NCHW maps stored NHWC; boxes (x1, y1, x2, y2) in network-input pixels, which are also the
original image's: the fixtures do not resize; `l` is the pyramid level, stride 2**l):
  input/images [1, H, W, 3] uint8 RGB; input/batch_inputs [1, Hp, Wp, 3] the normalized, padded tensor
  stage/backbone/c{2..5}; stage/neck/p{l}
  stage/anchors/p{l} [H_l * W_l * A, 4] (rpn and retina fixtures: AnchorGenerator.grid_priors)
  stage/rpn/{cls,reg}/p{l}: RPN / GA-RPN objectness logits and deltas (dense, also where Guided
    Anchoring's masked conv skips a location); stage/rpn/{loc,shape}/p{l}: GA location logit and shape deltas
  stage/head/{cls,reg,loc,shape}/p{l}: the same for RetinaNet / GA-RetinaNet
  stage/proposals/{boxes,scores}: the RPN's proposals (two-stage models) or its output (rpn fixtures)
  stage/roi/s{t}/rois [K, 4]: the boxes stage t > 1 pools (stage 1 pools the proposals); .../feats [K, 7, 7, 256] what its box head reads
    (HTC: with the semantic features added); .../cls_score [K, 81] logits; .../bbox_pred [K, 320 or 4]
  stage/roi/semantic_feats [K, 14, 14, 256]: HTC's semantic features pooled at stage 1's rois
  stage/semantic/{logits,feats}: HTC's semantic head at stride 8
  stage/det/{boxes,scores,labels}: final detections (mmdet's label space, score order)
  stage/mask/feats [N, 14, 14, 256]: the mask heads' input on the detections; stage/mask/s{t}/logits
    [N, 28, 28]: stage t's mask logits of each detection's class (stage/mask/s1/logits_head: those of the
    first MASKS_WHOLE detections, whole, in Mask R-CNN fixtures); stage/det/masks: np.packbits of the
    pasted binary masks [N, H, W] flattened per detection (meta["mask_shape"])
"""

import numpy as np
import torch
import torch.nn.functional as F

from tools.zoo_reference import common


MASKS_WHOLE = 4


class Hooks:
    """Records (inputs, output) of modules by path, every call: `hooks.calls[path]` -> [(args, out)]."""

    def __init__(self, model, paths):
        modules = dict(model.named_modules())
        unknown = [p for p in paths if p not in modules]
        if unknown:
            raise KeyError(f"no such modules: {unknown}")
        self.calls = {p: [] for p in paths}
        self.handles = [modules[p].register_forward_hook(self._hook(p)) for p in paths]

    def _hook(self, path):
        def hook(module, args, out):
            self.calls[path].append((args, out))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def dense_conv(module, x):
    """A (masked) conv's output computed at every location (mmcv's MaskedConv2d skips masked-out ones)."""
    return F.conv2d(x, module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups)


def _levels(n, first):
    return [f"p{first + i}" for i in range(n)]


def record(model, spec, run, image):
    """Runs the model once with hooks; returns ({name: array}, extra meta)."""
    arrays = {"input/images": image[None]}
    extra = {}

    def put(name, x, nchw=False):
        return common.put(arrays, name, x, nchw)

    kind = spec.kind
    paths = ["backbone"] + ([] if kind == "backbone" else ["neck"])
    head_path = "bbox_head" if kind in ("rpn", "ga_rpn", "retina", "ga_retina") else "rpn_head"
    if kind != "backbone":
        paths.append(head_path)
    ga = kind in ("ga_rpn", "ga_retina") or type(getattr(model, "rpn_head", None)).__name__ == "GARPNHead"
    if ga:
        paths += [f"{head_path}.{module_name('cls', kind)}", f"{head_path}.{module_name('reg', kind)}"]
    roi = getattr(model, "roi_head", None)
    stages = 0
    if roi is not None:
        cascade = kind in ("cascade", "htc")
        stages = roi.num_stages if cascade else 1
        sub = (lambda name, t: f"roi_head.{name}.{t}") if cascade else (lambda name, t: f"roi_head.{name}")
        for t in range(stages):
            paths += [sub("bbox_roi_extractor", t), sub("bbox_head", t)]
            if roi.with_mask:
                paths += [sub("mask_head", t)]
        if kind == "htc":
            paths += ["roi_head.semantic_head", "roi_head.semantic_roi_extractor"]
    hooks = Hooks(model, paths)
    rpn_calls = []
    if roi is not None:  # the proposals: what rpn_head.predict returns
        original = model.rpn_head.predict

        def predict(*args, **kwargs):
            out = original(*args, **kwargs)
            rpn_calls.append(out)
            return out
        model.rpn_head.predict = predict
    try:
        data, results = run(kind == "backbone")
    finally:
        hooks.close()
        if roi is not None:
            del model.rpn_head.predict
    calls = hooks.calls
    put("input/batch_inputs", data["inputs"], nchw=True)
    extra["batch_input_shape"] = list(data["data_samples"][0].metainfo["batch_input_shape"])

    (_, feats), = calls["backbone"]
    for i, f in enumerate(feats):
        put(f"stage/backbone/c{i + 2}", f, nchw=True)
    if kind == "backbone":
        return arrays, extra
    (_, pyramid), = calls["neck"]
    first = 3 if kind in ("retina", "ga_retina") else 2
    levels = _levels(len(pyramid), first)
    extra["levels"] = levels
    for name, f in zip(levels, pyramid):
        put(f"stage/neck/{name}", f, nchw=True)

    (_, head_out), = calls[head_path]
    group = "head" if kind in ("retina", "ga_retina") else "rpn"
    names = ("cls", "reg", "shape", "loc") if ga else ("cls", "reg")
    for what, per_level in zip(names, head_out):
        if ga and what in ("cls", "reg"):  # masked convs: recompute densely from their inputs
            path = f"{head_path}.{module_name(what, kind)}"
            module = dict(model.named_modules())[path]
            dense = [dense_conv(module, args[0]) for args, _ in calls[path]]
            for d, m in zip(dense, per_level):  # where mmdet computed them, they agree
                keep = m != 0
                if not torch.allclose(d[keep], m[keep], rtol=1e-5, atol=1e-5):
                    raise AssertionError(f"dense {what} differs from mmdet's masked conv")
            per_level = dense
        for name, x in zip(levels, per_level):
            put(f"stage/{group}/{what}/{name}", x, nchw=True)

    head = getattr(model, head_path)
    if kind in ("rpn", "retina"):
        sizes = [tuple(x.shape[-2:]) for x in head_out[0]]
        for name, a in zip(levels, head.prior_generator.grid_priors(sizes, device="cpu")):
            put(f"stage/anchors/{name}", a)

    pred = results[0].pred_instances
    if roi is None and kind in ("rpn", "ga_rpn"):
        put("stage/proposals/boxes", pred.bboxes)
        put("stage/proposals/scores", pred.scores)
        return arrays, extra
    if roi is not None:
        (proposals,) = rpn_calls
        put("stage/proposals/boxes", proposals[0].bboxes)
        put("stage/proposals/scores", proposals[0].scores)
        _record_roi(model, spec, calls, put, sub, stages, extra)
    put("stage/det/boxes", pred.bboxes)
    put("stage/det/scores", pred.scores)
    put("stage/det/labels", pred.labels.to(torch.int32))
    extra["num_detections"] = int(len(pred.scores))
    if roi is not None and roi.with_mask:
        _record_masks(calls, put, sub, stages, pred, arrays, extra, kind)
    return arrays, extra


def module_name(what, kind):
    if kind == "ga_retina":
        return "retina_cls" if what == "cls" else "retina_reg"
    return "conv_cls" if what == "cls" else "conv_reg"


def _record_roi(model, spec, calls, put, sub, stages, extra):
    """Per box stage: rois, pooled features (as the head reads them), class logits, deltas."""
    for t in range(stages):
        (ex_args, ex_out), = calls[sub("bbox_roi_extractor", t)]
        (head_args, (cls_score, bbox_pred)), = calls[sub("bbox_head", t)]
        rois = ex_args[1]
        if not torch.all(rois[:, 0] == 0):
            raise AssertionError("one image per fixture")
        if t > 0:  # stage 1 pools the proposals
            put(f"stage/roi/s{t + 1}/rois", rois[:, 1:])
        put(f"stage/roi/s{t + 1}/feats", head_args[0], nchw=True)
        put(f"stage/roi/s{t + 1}/cls_score", cls_score)
        put(f"stage/roi/s{t + 1}/bbox_pred", bbox_pred)
    if spec.kind == "htc":
        semantic_calls = calls["roi_head.semantic_head"]
        (_, (logits, feats)), = semantic_calls
        put("stage/semantic/logits", logits, nchw=True)
        put("stage/semantic/feats", feats, nchw=True)
        first_args, first_out = calls["roi_head.semantic_roi_extractor"][0]
        put("stage/roi/semantic_feats", first_out, nchw=True)
        extra["semantic_roi_extractor_calls"] = len(calls["roi_head.semantic_roi_extractor"])


def _record_masks(calls, put, sub, stages, pred, arrays, extra, kind):
    labels = pred.labels
    n = len(labels)
    for t in range(stages):
        (args, out), = calls[sub("mask_head", t)]
        logits = out[0] if isinstance(out, (list, tuple)) else out
        if t == 0:
            put("stage/mask/feats", args[0], nchw=True)
        chosen = logits[torch.arange(n), labels] if logits.shape[1] > 1 else logits[:, 0]
        put(f"stage/mask/s{t + 1}/logits", chosen)
        if kind == "two_stage" and t == 0:  # a few whole, to check mask pasting on its own
            put("stage/mask/s1/logits_head", chosen[:MASKS_WHOLE])
    masks = pred.masks.cpu().numpy().astype(bool)
    extra["mask_shape"] = list(masks.shape)
    arrays["stage/det/masks"] = np.packbits(masks.reshape(n, -1), axis=1)
    extra["mask_stages_averaged"] = ("mean of the sigmoid of every stage's logits" if kind == "cascade" else
                                     "the last stage's (mmdet 3.3 HTC, see mmdet_conventions.md)" if kind == "htc"
                                     else "single stage")
