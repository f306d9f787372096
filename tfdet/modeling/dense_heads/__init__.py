"""Per-location heads (RPN, GA-RPN, RetinaNet, GA-RetinaNet) and the specs that bind them to a config block.

A config block's `type` picks the spec: model.rpn.type "RPN" (default) or "GARPN"; model.retina.type
"Retina" (default) or "GARetina". Detectors build the head with `spec.make_head(name, impl=model.ops_impl)`
and call `spec.losses(...)` / `spec.proposals(...)` / `spec.detections(...)` on its outputs.
"""

from tfdet.modeling.dense_heads.rpn import RPNHead, RPNSpec
from tfdet.modeling.dense_heads.retina_head import RetinaHead, RetinaSpec
from tfdet.modeling.dense_heads.ga_head import GARPNHead, GARPNSpec
from tfdet.modeling.dense_heads.ga_retina_head import GARetinaHead, GARetinaSpec

RPN_SPECS = {"RPN": RPNSpec, "GARPN": GARPNSpec}
RETINA_SPECS = {"Retina": RetinaSpec, "GARetina": GARetinaSpec}


def _spec_class(specs, block, default, name):
    kind = block.get("type", default)
    if kind not in specs:
        raise ValueError(f"model.{name}.type: unknown {kind!r}; known: {sorted(specs)}.")
    return specs[kind]


def build_rpn(block):
    """The proposal head spec of a `model.rpn` block (RPNSpec or GARPNSpec, by block.type)."""
    return _spec_class(RPN_SPECS, block, "RPN", "rpn")(block)


def build_retina(block, num_classes):
    """The dense detection head spec of a `model.retina` block (RetinaSpec or GARetinaSpec, by block.type)."""
    return _spec_class(RETINA_SPECS, block, "Retina", "retina")(block, num_classes)


__all__ = ["GARPNHead", "GARPNSpec", "GARetinaHead", "GARetinaSpec", "RETINA_SPECS", "RPN_SPECS", "RPNHead",
           "RPNSpec", "RetinaHead", "RetinaSpec", "build_retina", "build_rpn"]
