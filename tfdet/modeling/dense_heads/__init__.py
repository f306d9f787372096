"""Per-location heads (RPN, GA-RPN, RetinaNet, GA-RetinaNet) and the specs that bind them to a config block.

A config block's `type` picks the spec from a registry (tfdet.modeling.registry): model.rpn.type
"RPN" (default) or "GARPN" (PROPOSAL_HEADS); model.retina.type "Retina" (default) or "GARetina"
(DENSE_HEADS). A spec holds its block's defaults (`DEFAULTS`) and refuses unknown keys. Detectors build
the head with `spec.make_head(name, impl=model.ops_impl)` and call `spec.losses(...)` /
`spec.proposals(...)` / `spec.detections(...)` on its outputs.
"""

from tfdet.modeling.dense_heads.rpn import RPNHead, RPNSpec
from tfdet.modeling.dense_heads.retina_head import RetinaHead, RetinaSpec
from tfdet.modeling.dense_heads.ga_head import GARPNHead, GARPNSpec
from tfdet.modeling.dense_heads.ga_retina_head import GARetinaHead, GARetinaSpec
from tfdet.modeling.registry import DENSE_HEADS, PROPOSAL_HEADS, as_dict


def build_rpn(block):
    """The proposal head spec of a `model.rpn` block (RPNSpec or GARPNSpec, by block.type)."""
    return PROPOSAL_HEADS.get(as_dict(block).get("type", "RPN"))(block)


def build_retina(block, num_classes):
    """The dense detection head spec of a `model.retina` block (RetinaSpec or GARetinaSpec, by block.type)."""
    return DENSE_HEADS.get(as_dict(block).get("type", "Retina"))(block, num_classes)


__all__ = ["DENSE_HEADS", "GARPNHead", "GARPNSpec", "GARetinaHead", "GARetinaSpec", "PROPOSAL_HEADS", "RPNHead",
           "RPNSpec", "RetinaHead", "RetinaSpec", "build_retina", "build_rpn"]
