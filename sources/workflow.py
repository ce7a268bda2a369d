"""The models a ComfyUI workflow needs, read from its JSON (the UI format or the API format).

What is read, as the ComfyUI frontend writes it (Comfy-Org/ComfyUI_frontend):

- `src/schemas/comfyWorkflowSchema.ts`, `zModelFile`: a model is `{name, url, directory}` with
  optional `hash` and `hash_type`; a workflow may list them at the top (`models`) and each node
  in `properties.models`. Subgraphs keep their own nodes in `definitions.subgraphs[].nodes[]`
  (Comfy-Org/workflow_templates `templates/01_get_started_text_to_image.json`: every loader of
  that template is inside its subgraph).
- `src/platform/workflow/core/utils/modelRequirements.ts`: two entries are the same model when
  `[name, directory]` are the same (`getModelFileKey`); of a node's `properties.models` only the
  ones its widgets have selected count (`getSelectedModelsMetadata`: the names among its
  `widgets_values`; none without widget values), and a muted or bypassed node (`mode` 2 or 4,
  `isInactiveWorkflowNodeMode`), or one inside a subgraph whose node is, needs nothing.
- The loader nodes of ComfyUI's `nodes.py` name their file in a widget (UI format:
  `widgets_values[i]`; API format `{"<id>": {"class_type", "inputs"}}`: `inputs[<name>]`), in
  the folder their `folder_paths.get_filename_list(...)` names: LOADERS below.

Names are kept as ComfyUI shows them, subfolder included (`SD1.5/x.safetensors`, `\\` read as
`/`); a name or directory that leads out of its folder is refused for that entry, with why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.jobs import SHA256_RE, unsafe_filename_reason
from library.layout import check_relative_folder, model_type_of

# class_type → (folder, the inputs naming a file, in widget order: they come first in each).
LOADERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ("checkpoints", ("ckpt_name",)),
    "unCLIPCheckpointLoader": ("checkpoints", ("ckpt_name",)),
    "ImageOnlyCheckpointLoader": ("checkpoints", ("ckpt_name",)),
    "LoraLoader": ("loras", ("lora_name",)),
    "LoraLoaderModelOnly": ("loras", ("lora_name",)),
    "VAELoader": ("vae", ("vae_name",)),
    "UNETLoader": ("diffusion_models", ("unet_name",)),
    "CLIPLoader": ("text_encoders", ("clip_name",)),
    "DualCLIPLoader": ("text_encoders", ("clip_name1", "clip_name2")),
    "TripleCLIPLoader": ("text_encoders", ("clip_name1", "clip_name2", "clip_name3")),
    "QuadrupleCLIPLoader": (
        "text_encoders",
        ("clip_name1", "clip_name2", "clip_name3", "clip_name4"),
    ),
    "ControlNetLoader": ("controlnet", ("control_net_name",)),
    "DiffControlNetLoader": ("controlnet", ("control_net_name",)),
    "UpscaleModelLoader": ("upscale_models", ("model_name",)),
    "CLIPVisionLoader": ("clip_vision", ("clip_name",)),
    "StyleModelLoader": ("style_models", ("style_model_name",)),
    "HypernetworkLoader": ("hypernetworks", ("hypernetwork_name",)),
    "GLIGENLoader": ("gligen", ("gligen_name",)),
}
# ComfyUI's `supported_pt_extensions` (folder_paths.py) and GGUF: a widget value naming a file.
MODEL_FILE = re.compile(r"\.(ckpt|pt|pt2|bin|pth|safetensors|pkl|sft|gguf|onnx)$", re.I)
# Bounds far above any real workflow (ComfyUI's templates have tens of nodes and a few models),
# checked on a count of the JSON as written before anything else is read: each model may become
# a job, and a 9.7 MB workflow of 20,000 nodes naming 12 models each held the daemon 51 s.
MAX_NODES = 10_000  # every node of the graph and of each subgraph definition
MAX_MODELS = 2_000  # every model entry: declared (`models`, `properties.models`) or in a loader
MAX_DEPTH = 8  # subgraphs inside subgraphs
INACTIVE_MODES = (2, 4)  # litegraph's LGraphEventMode NEVER (muted) and BYPASS


class NotAWorkflow(ValueError):
    """The JSON is not a ComfyUI workflow in either format."""


class TooLarge(NotAWorkflow):
    """A workflow past MAX_NODES or MAX_MODELS: the message names the bound and its count."""


@dataclass
class Model:
    """One model file a workflow needs."""

    name: str  # as ComfyUI shows it, `/` between a subfolder and the file
    directory: str  # ComfyUI's folder name: checkpoints, loras, text_encoders, …
    url: str | None = None
    sha256: str | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)  # {id, type, title}
    problem: str | None = None  # why it cannot be fetched as named
    urls: list[str] = field(default_factory=list)  # every URL given for it, first first
    hashes: list[str] = field(default_factory=list)  # every SHA256 given for it

    def settle(self) -> None:
        """One URL and one SHA256 from all its entries gave, or the problem why not: two
        different SHA256 are two different files; two URLs and no SHA256 to tell which one
        serves the right file is a guess the daemon does not make."""
        self.url = self.urls[0] if self.urls else None
        self.sha256 = self.hashes[0] if self.hashes else None
        if self.problem is not None:
            return
        if len(self.hashes) > 1:
            self.problem = (
                f"the workflow gives it {len(self.hashes)} different SHA256 "
                f"({', '.join(self.hashes)}): fix the workflow, one file has one hash"
            )
        elif len(self.urls) > 1 and not self.hashes:
            self.problem = (
                f"the workflow gives it {len(self.urls)} different URLs "
                f"({', '.join(self.urls)}) and no SHA256 to tell which serves the right file: "
                "fix the workflow, or queue the one you trust yourself"
            )

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, model_type_of(self.directory) or self.directory)

    @property
    def filename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def subfolder(self) -> str | None:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": self.directory,
            "url": self.url,
            "sha256": self.sha256,
            "nodes": self.nodes,
        }


def name_problem(name: str) -> str | None:
    """Why a model name cannot be a file under its folder; None when it can."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return f"{name!r} is an absolute path; a model is named relative to its folder"
    if ".." in text.split("/"):
        return f"{name!r} leads out of its folder ('..')"
    folder, _, base = text.rpartition("/")
    if reason := unsafe_filename_reason(base):
        return f"{name!r} cannot be a file name: {reason}"
    if folder:
        try:
            check_relative_folder(folder)
        except ValueError as exc:
            return f"{name!r}: {exc}"
    return None


def _node_ref(node: dict[str, Any], subgraph: str | None) -> dict[str, Any]:
    ref = {"id": node.get("id"), "type": node.get("type") or node.get("class_type")}
    title = node.get("title") or (node.get("_meta") or {}).get("title")
    ref["title"] = title if isinstance(title, str) else None
    if subgraph:
        ref["subgraph"] = subgraph
    return ref


class Collector:
    """Gathers the models of one workflow, each (name, directory) once."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], Model] = {}
        self.entered: set[int] = set()  # the subgraph definitions read
        # What each model already has, so a name given by every node is kept once in constant
        # time (a list's `in` made 20,000 nodes naming one model quadratic).
        self.seen: set[tuple[Any, ...]] = set()

    def add(
        self,
        name: Any,
        directory: Any,
        node: dict[str, Any] | None,
        url: Any = None,
        hash_value: Any = None,
        hash_type: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or not isinstance(directory, str):
            return
        model = Model(name=name.strip().replace("\\", "/"), directory=directory.strip())
        model.problem = name_problem(model.name)
        if model.problem is None and model_type_of(model.directory) is None:
            model.problem = f"directory {directory!r} is not a ComfyUI model folder name"
        existing = self.models.setdefault(model.key, model)
        if isinstance(url, str) and url.strip():
            text = url.strip()
            if re.match(r"^https?://", text, re.I):
                if self.first(model.key, "url", text):
                    existing.urls.append(text)
            elif existing.problem is None:
                existing.problem = f"its URL {text[:80]!r} is not an http:// or https:// URL"
        if isinstance(hash_type, str) and hash_type.lower() == "sha256" and hash_value:
            if isinstance(hash_value, str) and SHA256_RE.fullmatch(hash_value.strip()):
                digest = hash_value.strip().lower()
                if self.first(model.key, "sha256", digest):
                    existing.hashes.append(digest)
            elif existing.problem is None:
                existing.problem = f"its SHA256 {str(hash_value)[:80]!r} is not 64 hex digits"
        if node is not None and self.first(model.key, "node", *map(repr, node.items())):
            existing.nodes.append(node)

    def first(self, *key: Any) -> bool:
        """True the first time `key` is seen."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def declared(self, entries: Any, node: dict[str, Any] | None) -> None:
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                self.add(
                    entry.get("name"),
                    entry.get("directory"),
                    node,
                    entry.get("url"),
                    entry.get("hash"),
                    entry.get("hash_type"),
                )

    def loader(self, class_type: Any, values: dict[str, Any], ref: dict[str, Any]) -> None:
        folder, inputs = LOADERS.get(class_type if isinstance(class_type, str) else "", ("", ()))
        for input_name in inputs:
            value = values.get(input_name)
            if isinstance(value, str) and MODEL_FILE.search(value.strip()):
                self.add(value, folder, ref)

    def ui_graph(
        self,
        graph: dict[str, Any],
        subgraph: str | None,
        depth: int,
        subgraphs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if depth > MAX_DEPTH:
            return
        if subgraphs is None:  # the definitions live at the top; instances name them by id
            subgraphs = {
                str(sub["id"]): sub for sub in _subgraphs(graph) if sub.get("id") is not None
            }
        for node in graph.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            if node.get("mode") in INACTIVE_MODES:
                continue  # muted or bypassed: ComfyUI runs nothing of it, nor of its subgraph
            ref = _node_ref(node, subgraph)
            widgets = node.get("widgets_values")
            properties = node.get("properties")
            if isinstance(properties, dict):
                self.declared(selected_models(properties.get("models"), widgets), ref)
            inner = subgraphs.get(str(node.get("type")))
            if inner is not None and id(inner) not in self.entered:
                self.entered.add(id(inner))  # a subgraph used twice is read once
                label = inner.get("name") if isinstance(inner.get("name"), str) else inner["id"]
                self.ui_graph(inner, str(label), depth + 1, subgraphs)
            class_type = node.get("type")
            if isinstance(widgets, list) and class_type in LOADERS:
                names = LOADERS[class_type][1]
                self.loader(class_type, dict(zip(names, widgets, strict=False)), ref)
            elif isinstance(widgets, dict):
                self.loader(class_type, widgets, ref)


def selected_models(models: Any, widgets: Any) -> list[Any]:
    """The declared models a node has selected in its widgets (the frontend's
    `getSelectedModelsMetadata`): none when it has no widget values to select them with."""
    if not isinstance(models, list) or not models or not widgets:
        return []
    values = widgets if isinstance(widgets, list) else list(widgets.values())
    names = {v for v in values if isinstance(v, str) and v.strip()}
    return [m for m in models if isinstance(m, dict) and m.get("name") in names]


def is_api_format(data: dict[str, Any]) -> bool:
    """`{"<id>": {"class_type": ..., "inputs": {...}}}`: what ComfyUI's /prompt takes."""
    nodes = [v for k, v in data.items() if k not in ("models", "extra")]
    return bool(nodes) and all(isinstance(v, dict) and "class_type" in v for v in nodes)


def _subgraphs(data: dict[str, Any]) -> list[dict[str, Any]]:
    definitions = data.get("definitions")
    listed = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    return [sub for sub in listed if isinstance(sub, dict)] if isinstance(listed, list) else []


def _loader_inputs(class_type: Any, values: Any) -> int:
    if not isinstance(values, (list, dict)) or not isinstance(class_type, str):
        return 0
    return len(LOADERS.get(class_type, ("", ()))[1])


def size_of(data: dict[str, Any], ui: bool) -> tuple[int, int]:
    """(nodes, model entries) as written, in one pass: what the bounds are checked on."""
    top = data.get("models")
    nodes, models = 0, len(top) if isinstance(top, list) else 0
    if not ui:
        for node_id, node in data.items():
            if node_id not in ("models", "extra"):
                nodes += 1
                models += _loader_inputs(node.get("class_type"), node.get("inputs"))
        return nodes, models
    for graph in [data, *_subgraphs(data)]:
        listed = graph.get("nodes")
        for node in listed if isinstance(listed, list) else []:
            nodes += 1
            if not isinstance(node, dict):
                continue
            properties = node.get("properties")
            declared = properties.get("models") if isinstance(properties, dict) else None
            models += len(declared) if isinstance(declared, list) else 0
            models += _loader_inputs(node.get("type"), node.get("widgets_values"))
    return nodes, models


def check_size(data: dict[str, Any], ui: bool) -> None:
    """Raises TooLarge naming the bound a workflow is past, and how far."""
    nodes, models = size_of(data, ui)
    if nodes > MAX_NODES:
        raise TooLarge(f"a workflow may have at most {MAX_NODES:,} nodes; this one has {nodes:,}")
    if models > MAX_MODELS:
        raise TooLarge(
            f"a workflow may name at most {MAX_MODELS:,} models; this one names {models:,}"
        )


def models_of(data: Any) -> list[Model]:
    """The models a workflow needs, in the order first named; raises NotAWorkflow (TooLarge
    past a bound). Linear in the workflow's size."""
    if not isinstance(data, dict):
        raise NotAWorkflow("it is not a JSON object")
    ui = isinstance(data.get("nodes"), list)
    if not ui and not is_api_format(data):
        raise NotAWorkflow(
            "it has no `nodes` list (the format ComfyUI saves) and is not the API format "
            '(`{"<id>": {"class_type": ..., "inputs": {...}}}`)'
        )
    check_size(data, ui)
    collector = Collector()
    collector.declared(data.get("models"), None)
    if ui:
        collector.ui_graph(data, None, 0)
    else:
        for node_id, node in data.items():
            if node_id in ("models", "extra"):
                continue
            inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
            ref = _node_ref({**node, "id": node_id}, None)
            collector.loader(node.get("class_type"), inputs, ref)
    for model in collector.models.values():
        model.settle()
    return list(collector.models.values())
