"""The `extra_model_paths.yaml` block that makes ComfyUI read the daemon's folders (issue 16).

ComfyUI reads the file in comfyanonymous/ComfyUI `utils/extra_config.py`,
`load_extra_path_config`: `yaml.safe_load`, then for each top-level key its `base_path` (after
`expanduser`/`expandvars`) and optional `is_default` are taken out, every other key is a ComfyUI
folder name whose value is split on newlines, each non-empty line joined to base_path and added
with `folder_paths.add_model_folder_path` (`extra_model_paths.yaml.example` writes several
folders of one name as a `|` block). The folder names are those ComfyUI registers in
`folder_paths.py`, plus `animatediff_models` (ComfyUI-AnimateDiff-Evolved) and
`ultralytics_bbox` (ComfyUI-Impact-Subpack, `models/ultralytics/bbox`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import safefs
from library.layout import COMFYUI, Layout

KEY = "civitai_daemon"


def _by_comfyui_name() -> dict[str, tuple[str, ...]]:
    """ComfyUI's folder name (its key in extra_model_paths.yaml: the folder with `/` as `_`) →
    the daemon's model types it loads from there, read off the one table, layout.COMFYUI.
    Poses, wildcards, workflows, aesthetic gradients and "other" have no ComfyUI folder."""
    names: dict[str, list[str]] = {}
    for kind, folder in COMFYUI.items():
        names.setdefault(folder.replace("/", "_"), []).append(kind)
    return {name: tuple(kinds) for name, kinds in names.items()}


COMFYUI_FOLDERS = _by_comfyui_name()


def comfyui_folders(layout: Layout) -> dict[str, list[str]]:
    """Each ComfyUI folder name → the daemon's folders (relative to download_dir) it reads. A
    folder inside one already listed is left out: ComfyUI searches each folder recursively, and
    listing both would show its files twice under two names."""
    out: dict[str, list[str]] = {}
    for name, kinds in COMFYUI_FOLDERS.items():
        folders = list(dict.fromkeys(layout.folder(kind) for kind in kinds))
        out[name] = [f for f in folders if not any(f.startswith(g + "/") for g in folders)]
    return out


class _BlockDumper(yaml.SafeDumper):
    """yaml.SafeDumper writing a multi-line value as a `|` block, as ComfyUI's example does."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def comfyui_block(base_path: Path, folders: dict[str, list[str]]) -> str:
    """The YAML text: one top-level key, base_path, then each ComfyUI folder name. Dumped by
    a yaml.SafeDumper (what yaml.safe_dump uses) that only adds the `|` style, which
    yaml.safe_dump cannot choose per value."""
    section: dict[str, Any] = {"base_path": str(base_path)}
    for name, paths in folders.items():
        section[name] = paths[0] if len(paths) == 1 else "".join(p + "\n" for p in paths)
    return yaml.dump(
        {KEY: section}, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=1000
    )


def make_folders(root: Path, folders: dict[str, list[str]]) -> None:
    """Create every listed folder under `root` (the real download_dir), so each path in the block
    exists; never through a link that leads out of it (FolderOutside)."""
    root.mkdir(parents=True, exist_ok=True)
    for paths in folders.values():
        for relative in paths:
            folder = safefs.real_folder(root.joinpath(*relative.split("/")), root)
            folder.mkdir(parents=True, exist_ok=True)
            safefs.check_unmoved(folder, root)
