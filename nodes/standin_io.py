"""ComfyUI's V3 node schema (``comfy_api.latest.io``), the part the pack uses, for plain Python outside ComfyUI.

:mod:`.comfy_compat` hands out ComfyUI's own ``io`` inside ComfyUI and this module elsewhere, so every node class
of the pack is the same ``class X(io.ComfyNode)`` in both places. What is here behaves as ComfyUI 0.3.75 does:

* the socket types' ``Input``/``Output`` take ComfyUI's keyword arguments and serialise (``as_dict``) to the same
  dicts, so :meth:`ComfyNode.GET_NODE_INFO_V1` is the node's ``/object_info`` entry (a real-ComfyUI test compares
  the two for every node);
* :class:`Schema` validates and finalises as ComfyUI's does (unique ids, an output node asks for the prompt and
  extra_pnginfo, outputs without ids get ComfyUI's default ids);
* :meth:`ComfyNode.PREPARE_CLASS_CLONE` + :meth:`ComfyNode.EXECUTE_NORMALIZED` run a node the way ComfyUI's
  executor does: a clone of the class carrying the hidden inputs, ``execute`` normalised to a :class:`NodeOutput`.

Nothing here imports ComfyUI (it may not be installed); types the pack does not use are left out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any


def _pruned(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden inputs of one execution (``cls.hidden.prompt``...); an input not requested is None."""

    def __init__(self, values: dict[Hidden, Any]) -> None:
        for hidden in Hidden:
            setattr(self, hidden.name, values.get(hidden))


class Input:
    """A socket input (``id``, optional, tooltip), the base of every widget input."""

    io_type = ""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict | None = None) -> None:
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict or {}

    def as_dict(self) -> dict[str, Any]:
        return _pruned({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                        "lazy": self.lazy}) | _pruned(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None,
                 extra_dict: dict | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless = default, socketless
        self.widget_type, self.force_input = widget_type, force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"default": self.default, "socketless": self.socketless,
                                            "widgetType": self.widget_type, "forceInput": self.force_input})


class Output:
    io_type = ""

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

    def as_dict(self) -> dict[str, Any]:
        return _pruned({"display_name": self.display_name, "tooltip": self.tooltip,
                        "is_output_list": self.is_output_list})

    def get_io_type(self) -> str:
        return self.io_type


def _socket_type(io_type: str, input_class: type[Input] = Input) -> type:
    """A socket type (``io.Image``...) with its ``Input`` and ``Output`` classes bound to ``io_type``."""
    namespace = {"io_type": io_type,
                 "Input": type("Input", (input_class,), {"io_type": io_type}),
                 "Output": type("Output", (Output,), {"io_type": io_type})}
    return type(io_type.title().replace("_", ""), (), namespace)


class _NumberInput(WidgetInput):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: float | None = None, min: float | None = None,
                 max: float | None = None, step: float | None = None, socketless: bool | None = None,
                 force_input: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.min, self.max, self.step = min, max, step

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"min": self.min, "max": self.max, "step": self.step})


class _IntInput(_NumberInput):
    def __init__(self, id: str, *args: Any, control_after_generate: bool | None = None, **kwargs: Any) -> None:
        super().__init__(id, *args, **kwargs)
        self.control_after_generate = control_after_generate

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"control_after_generate": self.control_after_generate})


class _StringInput(WidgetInput):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, multiline: bool = False, placeholder: str | None = None,
                 default: str | None = None, socketless: bool | None = None,
                 force_input: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.multiline, self.placeholder = multiline, placeholder

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"multiline": self.multiline, "placeholder": self.placeholder})


class _BooleanInput(WidgetInput):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: bool | None = None, label_on: str | None = None,
                 label_off: str | None = None, socketless: bool | None = None,
                 force_input: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.label_on, self.label_off = label_on, label_off

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"label_on": self.label_on, "label_off": self.label_off})


class _ComboInput(WidgetInput):
    def __init__(self, id: str, options: list[str] | None = None, display_name: str | None = None,
                 optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                 default: str | None = None, control_after_generate: bool | None = None,
                 upload: UploadType | None = None, socketless: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
        self.options, self.control_after_generate, self.upload = options, control_after_generate, upload

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"multiselect": False, "options": self.options,
                                            "control_after_generate": self.control_after_generate,
                                            **({self.upload.value: True} if self.upload is not None else {})})


Boolean = _socket_type("BOOLEAN", _BooleanInput)
Int = _socket_type("INT", _IntInput)
Float = _socket_type("FLOAT", _NumberInput)
String = _socket_type("STRING", _StringInput)
Combo = _socket_type("COMBO", _ComboInput)
Image = _socket_type("IMAGE")
Mask = _socket_type("MASK")
Audio = _socket_type("AUDIO")
Video = _socket_type("VIDEO")
Vae = _socket_type("VAE")
ClipVision = _socket_type("CLIP_VISION")


def Custom(io_type: str) -> type:  # noqa: N802 (ComfyUI's name)
    """A socket type of the pack's own (``io.Custom("SONIC_MODEL")``)."""
    return _socket_type(io_type)


@dataclass
class Schema:
    """What a node declares: ComfyUI's ``io.Schema`` fields that the pack uses."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    hidden: list[Hidden] | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        """Input and output ids unique, within and across the two lists."""
        input_ids = [i.id for i in self.inputs or []]
        output_ids = [o.id for o in self.outputs or []]
        issues = [f"{what} ids must be unique, but {[k for k, n in Counter(ids).items() if n > 1]} are not."
                  for what, ids in (("Input", input_ids), ("Output", output_ids)) if len(set(ids)) != len(ids)]
        if set(input_ids) & set(output_ids):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(input_ids) & set(output_ids)} "
                          "are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self) -> None:
        """An output node gets the prompt and extra_pnginfo hidden inputs; outputs without ids get default ids."""
        if self.is_output_node:
            self.hidden = list(self.hidden or [])
            self.hidden += [h for h in (Hidden.prompt, Hidden.extra_pnginfo) if h not in self.hidden]
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def get_v1_info(self, cls: type) -> dict[str, Any]:
        """The node's entry in ComfyUI's ``/object_info``."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for item in self.inputs or []:
            options = item.as_dict()
            options.pop("optional", None)
            sections.setdefault("optional" if item.optional else "required", {})[item.id] = (item.get_io_type(),
                                                                                               options)
        for hidden in self.hidden or []:
            sections.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        outputs = self.outputs or []
        return {"input": sections, "input_order": {key: list(value) for key, value in sections.items()},
                "output": [o.io_type for o in outputs], "output_is_list": [o.is_output_list for o in outputs],
                "output_name": [o.display_name or o.io_type for o in outputs],
                "output_tooltips": [o.tooltip or None for o in outputs], "name": self.node_id,
                "display_name": self.display_name, "description": self.description,
                "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes",
                "category": self.category, "output_node": self.is_output_node, "deprecated": self.is_deprecated,
                "experimental": self.is_experimental, "api_node": self.is_api_node}


class NodeOutput:
    """What ``execute`` returns: output values in declared order (``args``) and an optional ``ui`` payload."""

    def __init__(self, *args: Any, ui: dict | None = None, expand: dict | None = None,
                 block_execution: str | None = None) -> None:
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self) -> tuple | None:
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode(ABC):
    """Base of a V3 node: classmethods ``define_schema`` and ``execute``; optionally ``validate_inputs`` and
    ``fingerprint_inputs`` (ComfyUI calls a node's own override only, so the base versions raise)."""

    RELATIVE_PYTHON_MODULE: str | None = None
    hidden: HiddenHolder = HiddenHolder({})

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 (ComfyUI's name)
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True) -> dict[str, dict]:  # noqa: N802
        sections = cls.GET_SCHEMA().get_v1_info(cls)["input"]
        if not include_hidden:
            sections.pop("hidden", None)
        return sections

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802
        return cls.GET_SCHEMA().get_v1_info(cls)

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict[Hidden, Any]) -> type[ComfyNode]:  # noqa: N802
        """A subclass carrying one execution's hidden inputs, as ComfyUI's executor makes before each call."""
        return type(cls.__name__, (cls,), {"hidden": HiddenHolder(hidden_inputs), "__module__": cls.__module__})

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> NodeOutput:  # noqa: N802
        returned = cls.execute(*args, **kwargs)
        if returned is None:
            return NodeOutput()
        if isinstance(returned, NodeOutput):
            return returned
        if isinstance(returned, tuple):
            return NodeOutput(*returned)
        raise TypeError(f"Invalid return type from node: {type(returned)}")


class ComfyExtension(ABC):
    """What a pack's ``comfy_entrypoint`` returns: ComfyUI registers the classes of :meth:`get_node_list`."""

    async def on_load(self) -> None:
        """Called once when ComfyUI loads the extension."""

    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]:
        raise NotImplementedError
