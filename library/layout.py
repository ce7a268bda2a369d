"""Which folder a model type lives in, per app (SPEC §14): the one place that says so.

`download_dir` is where the app keeps its models, and `layout` says which app:

- `default`: `<model_type>/` (the first release's folders).
- `comfyui`: `download_dir` is ComfyUI's `models/`. Folder names as ComfyUI registers them in
  comfyanonymous/ComfyUI `folder_paths.py` (`folder_names_and_paths["checkpoints"]`, "loras",
  "vae", "embeddings", "hypernetworks", "controlnet", "upscale_models", "text_encoders" (old
  name "clip"), "diffusion_models" (old name "unet"), "clip_vision", "style_models", …); motion
  modules as ComfyUI-AnimateDiff-Evolved registers them (`models/animatediff_models`), detection
  models as ComfyUI-Impact-Subpack does (`models/ultralytics/bbox`).
- `a1111`: `download_dir` is the stable-diffusion-webui folder. AUTOMATIC1111's defaults:
  `models/Stable-diffusion` (modules/sd_models.py, `model_dir = "Stable-diffusion"`),
  `models/Lora` (extensions-builtin/Lora/preload.py, `--lora-dir`; since 1.5 it also loads
  LyCORIS/LoCon and DoRA files from there), `models/VAE` (modules/sd_vae.py), `embeddings`
  (modules/cmd_args.py, `--embeddings-dir` under the data path), `models/hypernetworks`
  (`--hypernetwork-dir`), `models/ESRGAN` (modules/esrgan_model.py), `models/ControlNet`
  (Mikubill/sd-webui-controlnet). Types A1111 itself has no folder for go where
  BlafKing/sd-civitai-browser-plus (scripts/civitai_api.py, `contenttype_folder`) puts them:
  motion modules in `extensions/sd-webui-animatediff/model`, wildcards in
  `extensions/sd-dynamic-prompts/wildcards`, detection models in `models/adetailer`, the rest
  in `models/Poses`, `models/Workflows`, `models/Other`.
- `forge`: as A1111 (Forge keeps its folders; lllyasviel/stable-diffusion-webui-forge
  modules_forge/shared.py: `controlnet_dir = os.path.join(models_path, 'ControlNet')`), plus
  `models/text_encoder` (Forge's `--text-encoder-dir`), and UNet-only `diffusion_models` in
  `models/Stable-diffusion`, the one folder Forge lists them from (see FORGE below).

`folders` in config.json overrides any type's folder (a relative path under download_dir).
A type no table names keeps its own name as its folder (`models/<type>` in a1111/forge).
The app folder names are accepted as model_type aliases: `Stable-diffusion` → checkpoint,
`loras` → lora, `upscale_models` → upscaler, `models/Lora` → lora.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath

LAYOUTS = ("default", "comfyui", "a1111", "forge")

# Civitai's type names → this daemon's model types (compared lower-case, spaces removed).
CIVITAI_TYPES = {
    "checkpoint": "checkpoint",
    "lora": "lora",
    "locon": "locon",
    "lycoris": "locon",
    "dora": "dora",
    "textualinversion": "embedding",
    "hypernetwork": "hypernetwork",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscaler": "upscaler",
    "motionmodule": "motionmodule",
    "poses": "poses",
    "wildcards": "wildcards",
    "workflows": "workflows",
    "aestheticgradient": "aestheticgradient",
    "detection": "detection",
    "other": "other",
    # Component types Civitai added in 2026: each goes where ComfyUI reads that kind of file
    # (`clip` is ComfyUI's old name for text_encoders); a vision-language model or an LLM has no
    # folder of its own in these apps.
    "textencoder": "text_encoders",
    "clip": "text_encoders",
    "unet": "diffusion_models",
    "clipvision": "clip_vision",
    "comfyworkflows": "workflows",
    "visionlanguage": "other",
    "llm": "other",
}

COMFYUI = {  # in the order of the extra_model_paths.yaml block (library/integrations.py)
    "checkpoint": "checkpoints",
    "lora": "loras",
    "locon": "loras",
    "dora": "loras",
    "vae": "vae",
    "embedding": "embeddings",
    "hypernetwork": "hypernetworks",
    "controlnet": "controlnet",
    "upscaler": "upscale_models",
    "text_encoders": "text_encoders",
    "diffusion_models": "diffusion_models",
    "clip_vision": "clip_vision",
    "style_models": "style_models",
    "motionmodule": "animatediff_models",
    "detection": "ultralytics/bbox",
}

A1111 = {
    "checkpoint": "models/Stable-diffusion",
    "lora": "models/Lora",
    "locon": "models/Lora",
    "dora": "models/Lora",
    "embedding": "embeddings",
    "hypernetwork": "models/hypernetworks",
    "vae": "models/VAE",
    "controlnet": "models/ControlNet",
    "upscaler": "models/ESRGAN",
    "motionmodule": "extensions/sd-webui-animatediff/model",
    "wildcards": "extensions/sd-dynamic-prompts/wildcards",
    "aestheticgradient": (
        "extensions/stable-diffusion-webui-aesthetic-gradients/aesthetic_embeddings"
    ),
    "detection": "models/adetailer",
    "poses": "models/Poses",
    "workflows": "models/Workflows",
    "other": "models/Other",
}

# Forge picks a diffusion model only from its checkpoint list: in
# lllyasviel/stable-diffusion-webui-forge, modules_forge/main_entry.py `refresh_models()` lists
# the checkpoints through `shared_items.refresh_checkpoints()` (modules/sd_models.py
# `list_models()`: models/Stable-diffusion) and the extra modules from models/VAE and
# models/text_encoder only; no UNet folder is read. So a UNet-only file (Flux or SD3 weights
# without their encoders) goes with the checkpoints.
FORGE = {
    **A1111,
    "text_encoders": "models/text_encoder",
    "diffusion_models": "models/Stable-diffusion",
}

TABLES: dict[str, dict[str, str]] = {
    "default": {},
    "comfyui": COMFYUI,
    "a1111": A1111,
    "forge": FORGE,
}

# Older or other names of a folder, each meaning a type.
EXTRA_ALIASES = {
    "unet": "diffusion_models",
    "clip": "text_encoders",
    "text_encoder": "text_encoders",
    "lycoris": "locon",
    "models/lycoris": "locon",
    "ultralytics": "detection",
    "adetailer": "detection",
    "esrgan": "upscaler",
    "realesrgan": "upscaler",  # A1111 reads upscalers from models/RealESRGAN and models/SwinIR
    "models/realesrgan": "upscaler",
    "swinir": "upscaler",
    "models/swinir": "upscaler",
    "checkpoints": "checkpoint",
}

TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# Device names on Windows: a folder or file so named (with any extension) is the device.
WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)
}
PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$")  # one folder name of a path


def _aliases() -> dict[str, str]:
    """Each app folder name (lower-case, with and without its `models/` prefix) → its type."""
    out: dict[str, str] = {}
    for table in (COMFYUI, A1111, FORGE):
        for kind, folder in table.items():
            key = folder.lower()
            out.setdefault(key, kind)
            out.setdefault(key.removeprefix("models/"), kind)  # a folder shared by types
    out.update(EXTRA_ALIASES)  # names the first of them: loras → lora, not dora
    out.update(CIVITAI_TYPES)
    return out


ALIASES = _aliases()


def model_type_of(value: str) -> str | None:
    """The model type a name means: a Civitai type (LORA, TextualInversion), an app folder
    (`Stable-diffusion`, `loras`, `models/Lora`) or a type itself; None when it is not a usable
    name (the caller says why)."""
    key = value.strip().replace("\\", "/").strip("/")
    mapped = ALIASES.get(key.lower()) or ALIASES.get(key.lower().replace(" ", ""))
    if mapped is not None:
        return mapped
    return key if TYPE_RE.fullmatch(key) and key not in WINDOWS_RESERVED else None


def check_relative_folder(value: str) -> str:
    """A folder given in `folders`: a relative path of plain names under download_dir, with `/`
    between them; returns it normalised, raises ValueError saying what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a folder must be a non-empty relative path such as 'models/Lora'")
    text = value.strip().replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"{value!r} is absolute: give a path relative to download_dir")
    parts = [p for p in text.split("/") if p != ""]
    if len(parts) > 8:
        raise ValueError(f"{value!r} is nested too deep (at most 8 folders)")
    for part in parts:
        if part in (".", "..") or not PART_RE.fullmatch(part) or part.endswith((".", " ")):
            raise ValueError(
                f"{value!r}: {part!r} is not a plain folder name (letters, digits, space, "
                f"'.', '_', '+', '-'; no '..')"
            )
        if part.split(".")[0].strip().lower() in WINDOWS_RESERVED:
            raise ValueError(f"{value!r}: {part!r} is a device name on Windows, not a folder")
    return str(PurePosixPath(*parts))


class Layout:
    """The folder (relative to download_dir, `/`-separated) of each model type."""

    def __init__(self, name: str = "default", folders: Mapping[str, str] | None = None) -> None:
        if name not in TABLES:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {name!r}")
        self.name = name
        self.overrides: dict[str, str] = {}
        for key, folder in (folders or {}).items():
            kind = model_type_of(key)
            if kind is None:
                raise ValueError(f"folders: {key!r} is not a model type")
            self.overrides[kind] = check_relative_folder(folder)

    def folder(self, model_type: str) -> str:
        if model_type in self.overrides:
            return self.overrides[model_type]
        table = TABLES[self.name]
        if model_type in table:
            return table[model_type]
        return f"models/{model_type}" if self.name in ("a1111", "forge") else model_type

    def types_of(self, folder: str) -> list[str]:
        """The model types this layout puts in `folder` (a shared folder holds several)."""
        return sorted(
            {kind for kind in (*self.overrides, *TABLES[self.name]) if self.folder(kind) == folder}
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (self.name, self.overrides) == (
            other.name,
            other.overrides,
        )

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.overrides!r})"


def every_folder(model_types: list[str], extra: Layout | None = None) -> dict[str, str]:
    """Each folder any layout (and `extra`'s overrides) puts one of `model_types` in → that
    type: where the scanner and the updater look for files in either layout. A folder two
    types share maps to the first type named."""
    layouts = [Layout(name) for name in LAYOUTS]
    if extra is not None:
        layouts.insert(0, extra)
    out: dict[str, str] = {}
    for layout in layouts:
        for kind in model_types:
            out.setdefault(layout.folder(kind), kind)
    return out


def known_types() -> list[str]:
    """The types some table names, in a stable order."""
    kinds = dict.fromkeys(CIVITAI_TYPES.values())
    for table in TABLES.values():
        kinds.update(dict.fromkeys(table))
    return list(kinds)
