"""One way to build every part of a model from its config block: registries of named builders, and
the block check that every builder applies to its options.

A config block names what it builds with `type`: a name registered in the part's registry, or
"package.module:Name" for code outside tfdet (the module is imported, so it may register more parts):

    model.backbone.type  BACKBONES        model.neck.type   NECKS
    model.rpn.type       PROPOSAL_HEADS   model.retina.type DENSE_HEADS
    model.roi.type       ROI_HEADS        model.roi.box_head.type  BOX_HEADS
    model.type           DETECTORS

    @register_box_head("OneConv")          # or BOX_HEADS.register("OneConv", OneConvBoxHead)
    class OneConvBoxHead(keras.layers.Layer): ...

Defaults live with the part that uses them (a `DEFAULTS` dict next to the builder), and
`block_options` refuses keys the part does not know, naming the key and the block.
"""

import importlib
import inspect

import ml_collections


class Registry:
    """Builders of one kind of part, by name."""

    def __init__(self, kind, config_key):
        self.kind, self.config_key = kind, config_key
        self._entries = {}

    def register(self, name, obj=None):
        """Registers `obj` under `name`; without `obj`, a decorator. A name is registered once."""
        def add(value):
            if name in self._entries and self._entries[name] is not value:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r}).")
            self._entries[name] = value
            return value
        return add if obj is None else add(obj)

    def get(self, name):
        """The builder registered as `name`, or the object a "package.module:Name" string points to."""
        if isinstance(name, str) and ":" in name:
            module, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise ValueError(f"{self.config_key} {name!r}: cannot import {attr} from {module} ({err}).") from err
        if name not in self._entries:
            raise ValueError(f"{self.config_key}: unknown {self.kind} {name!r} (unknown type); known: "
                             f"{sorted(self._entries)}, or 'package.module:Name' for one defined outside tfdet.")
        return self._entries[name]

    def __contains__(self, name):
        return name in self._entries

    def __getitem__(self, name):
        return self.get(name)

    def names(self):
        return sorted(self._entries)


def as_dict(block):
    """A plain dict of a config block (ConfigDict, dict or None)."""
    if block is None:
        return {}
    return block.to_dict() if hasattr(block, "to_dict") else dict(block)


def block_options(block, defaults, where):
    """`block` over `defaults` as a ConfigDict; a key that is not in `defaults` is refused with a message
    naming it and the block `where` (e.g. "model.roi")."""
    block = as_dict(block)
    unknown = sorted(set(block) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(defaults)}.")
    return ml_collections.ConfigDict({**defaults, **block})


def with_defaults(defaults, **overrides):
    """A config block: `defaults` with `overrides` (which must be known keys), nested dicts merged.
    Config files build their blocks with it, so every default stays where its part is defined."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"with_defaults: unknown field(s) {unknown}; known: {sorted(defaults)}.")
    out = dict(defaults)
    for key, value in overrides.items():
        out[key] = with_defaults(defaults[key], **value) if isinstance(defaults[key], dict) and value else value
    return out


def construct(builder, where, *args, **options):
    """builder(*args, **options); an option the builder does not take is reported as a ValueError naming
    the config block `where` (Python says "unexpected keyword argument", Keras layers "Unrecognized
    keyword arguments")."""
    try:
        return builder(*args, **options)
    except (TypeError, ValueError) as err:
        if "unexpected keyword" not in str(err) and "Unrecognized keyword" not in str(err):
            raise
        raise ValueError(f"{where}: {err}") from err


def constructor_defaults(fn, skip=()):
    """{name: default} of the keyword arguments of `fn` (a class: its __init__), but `skip`: the defaults
    of a part whose options are its constructor's arguments, so they are written once, in its signature."""
    params = inspect.signature(fn).parameters
    return {name: p.default for name, p in params.items()
            if p.default is not p.empty and name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


BACKBONES = Registry("backbone", "model.backbone.type")
NECKS = Registry("neck", "model.neck.type")
PROPOSAL_HEADS = Registry("proposal head", "model.rpn.type")
DENSE_HEADS = Registry("dense head", "model.retina.type")
ROI_HEADS = Registry("RoI head", "model.roi.type")
BOX_HEADS = Registry("box head", "model.roi.box_head.type")
DETECTORS = Registry("detector", "model.type")

register_backbone = BACKBONES.register
register_neck = NECKS.register
register_proposal_head = PROPOSAL_HEADS.register
register_dense_head = DENSE_HEADS.register
register_roi_head = ROI_HEADS.register
register_box_head = BOX_HEADS.register
register_detector = DETECTORS.register
