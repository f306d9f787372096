"""Per-location heads (RPN, RetinaNet, ...)."""

from tfdet.modeling.dense_heads.rpn import RPNHead

__all__ = ["RPNHead"]
