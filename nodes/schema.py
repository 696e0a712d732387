"""One declaration per node, two ComfyUI class shapes built from it.

A node of the pack is a :class:`NodeSpec` (id, inputs, outputs...) plus a plain function that takes the inputs as
keyword arguments and returns a :class:`NodeResult`. :func:`build_node` turns the pair into

* a V3 ``comfy_api.latest.io.ComfyNode`` subclass when the running ComfyUI has the V3 schema, or
* a V1 class (``INPUT_TYPES``/``RETURN_TYPES``/``FUNCTION``) otherwise: older ComfyUI, and plain Python, where
  ``cls().execute(**inputs)`` runs the node without a server.

``SONIC_NODE_SCHEMA=v1`` forces the V1 shape (to test it inside a V3-capable ComfyUI). Both shapes register in
``NODE_CLASS_MAPPINGS`` (ComfyUI accepts V3 classes there too). Values of widget inputs are validated by ComfyUI
against min/max/options before the function runs; the functions still check what ComfyUI cannot know.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sonic_core.errors import SonicInputError

from .comfy_compat import comfy_io

WIDGET_KINDS = ("FLOAT", "INT", "STRING", "BOOLEAN", "COMBO")
# ComfyUI type name -> class name in comfy_api.latest.io (anything else becomes io.Custom(type name)).
_V3_TYPES = {"AUDIO": "Audio", "IMAGE": "Image", "VIDEO": "Video", "MASK": "Mask", "LATENT": "Latent",
             "VAE": "Vae", "CLIP_VISION": "ClipVision", "MODEL": "Model", "FLOAT": "Float", "INT": "Int",
             "STRING": "String", "BOOLEAN": "Boolean", "COMBO": "Combo"}
HIDDEN_V1 = {"prompt": "PROMPT", "unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}


@dataclass(frozen=True)
class Param:
    """One input socket or widget. ``options`` (COMBO) is a sequence or a function called at each listing."""

    name: str
    kind: str
    optional: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: Sequence[str] | Callable[[], list[str]] | None = None
    upload: str | None = None  # "audio", "image" or "video": adds ComfyUI's upload button to a COMBO
    multiline: bool = False
    tooltip: str | None = None

    def option_list(self) -> list[str]:
        return list(self.options() if callable(self.options) else self.options or [])

    def widget_options(self) -> dict[str, Any]:
        """The V1 options dict (also the keyword arguments of the V3 ``Input``)."""
        opts = {"default": self.default, "min": self.min, "max": self.max, "step": self.step,
                "tooltip": self.tooltip}
        if self.kind == "STRING":
            opts["multiline"] = self.multiline
        return {k: v for k, v in opts.items() if v is not None}


@dataclass(frozen=True)
class Result:
    """One output socket."""

    name: str
    kind: str
    tooltip: str | None = None


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    category: str
    description: str
    inputs: tuple[Param, ...]
    outputs: tuple[Result, ...]
    output_node: bool = False
    hidden: tuple[str, ...] = ()  # of HIDDEN_V1's keys; passed to the function as keyword arguments
    not_idempotent: bool = False  # re-run every time (e.g. the file behind an input may have changed)


@dataclass
class NodeResult:
    """What a node function returns: output values in declared order, and an optional UI payload."""

    values: tuple
    ui: dict[str, Any] | None = None


NodeFunction = Callable[..., NodeResult]


def auto_or_number(text: str, name: str, allowed: str = "between 0 and 1") -> float | str:
    """A STRING widget that takes ``auto`` or a number: ``"auto"`` or the float (range checks are the engine's)."""
    value = str(text).strip().lower()
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise SonicInputError(f"{name} {text!r}: use 'auto' or a number {allowed}") from None


def use_v3() -> bool:
    return comfy_io() is not None and os.environ.get("SONIC_NODE_SCHEMA", "").lower() != "v1"


def build_node(spec: NodeSpec, function: NodeFunction) -> type:
    """The ComfyUI node class for ``spec`` (V3 where available, else V1); ``SONIC_SPEC`` holds the spec."""
    return build_v3_node(spec, function) if use_v3() else build_v1_node(spec, function)


def build_v1_node(spec: NodeSpec, function: NodeFunction) -> type:
    def input_types(cls: type) -> dict[str, dict[str, Any]]:
        sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}
        for param in spec.inputs:
            kind = param.option_list() if param.kind == "COMBO" else param.kind
            opts = param.widget_options()
            if param.upload:
                opts[f"{param.upload}_upload"] = True
            sections["optional" if param.optional else "required"][param.name] = (kind, opts)
        if spec.hidden:
            sections["hidden"] = {name: HIDDEN_V1[name] for name in spec.hidden}
        return sections

    def execute(self: Any, **inputs: Any) -> Any:
        result = function(**inputs)
        return {"ui": result.ui, "result": result.values} if result.ui else result.values

    namespace: dict[str, Any] = {
        "__doc__": spec.description, "SONIC_SPEC": spec, "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(out.kind for out in spec.outputs),
        "RETURN_NAMES": tuple(out.name for out in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(out.tooltip or "" for out in spec.outputs),
        "FUNCTION": "execute", "CATEGORY": spec.category, "DESCRIPTION": spec.description,
        "OUTPUT_NODE": spec.output_node, "execute": execute, "__module__": function.__module__,
    }
    if spec.not_idempotent:
        namespace["IS_CHANGED"] = classmethod(lambda cls, **_: float("nan"))  # NaN never equals itself
    return type(spec.node_id, (), namespace)


def _v3_type(io: Any, kind: str) -> Any:
    return getattr(io, _V3_TYPES[kind]) if kind in _V3_TYPES else io.Custom(kind)


def _v3_input(io: Any, param: Param) -> Any:
    kwargs: dict[str, Any] = {"optional": param.optional}
    if param.kind in WIDGET_KINDS:
        kwargs.update(param.widget_options())
    elif param.tooltip:
        kwargs["tooltip"] = param.tooltip
    if param.kind == "COMBO":
        kwargs["options"] = param.option_list()
        if param.upload:
            kwargs["upload"] = getattr(io.UploadType, param.upload)
    return _v3_type(io, param.kind).Input(param.name, **kwargs)


def build_v3_node(spec: NodeSpec, function: NodeFunction) -> type:
    io = comfy_io()

    def define_schema(cls: type) -> Any:
        return io.Schema(
            node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
            description=spec.description, inputs=[_v3_input(io, p) for p in spec.inputs],
            outputs=[_v3_type(io, out.kind).Output(display_name=out.name, tooltip=out.tooltip)
                     for out in spec.outputs],
            hidden=[getattr(io.Hidden, name) for name in spec.hidden], is_output_node=spec.output_node,
            not_idempotent=spec.not_idempotent)

    def execute(cls: Any, **inputs: Any) -> Any:
        hidden = {name: getattr(cls.hidden, name) for name in spec.hidden}
        result = function(**inputs, **hidden)
        return io.NodeOutput(*result.values, ui=result.ui)

    return type(spec.node_id, (io.ComfyNode,), {
        "__doc__": spec.description, "SONIC_SPEC": spec, "define_schema": classmethod(define_schema),
        "execute": classmethod(execute), "__module__": function.__module__})
