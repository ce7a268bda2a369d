"""Civitai AIR ids (AI Resource names): `urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>`.

The form is Civitai's (github.com/civitai/civitai wiki "AIR - Uniform Resource Names for AI":
`urn:air:{ecosystem}:{type}:{source}:{id}@{version?}:{layer?}.?{format?}`; the parser of
civitai/civitai-client-javascript src/utils/Air.ts, and civitai/civitai src/shared/utils/air.ts,
which also writes a file id as `+<fileId>` after the version). Examples from Civitai:
`urn:air:sdxl:lora:civitai:328553@368189`, `urn:air:sd1:model:civitai:2421@43533`.

Only Civitai's own source can be downloaded here, and only with numeric ids; without
`@<versionId>` it means the model's newest version. The `<type>` names a folder when the request
gives none: Civitai writes `checkpoint`, `lora`, `lycoris`, `dora`, `embedding`, `hypernet`,
`vae`, `controlnet`, `upscaler`, `motion`, `ag`, `text_encoders`, `unet`, `clipvision`, `clip`,
`diffusionmodel` (its `typeUrnMap` and `fileTypeUrnMap`); the wiki's examples say `model`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from errors import InvalidRequest
from library.layout import model_type_of

PREFIX = "urn:air:"
SOURCE = "civitai"
PART = r"[A-Za-z0-9_\-/]+"  # one name of an AIR, as Civitai's parser takes it
AIR_RE = re.compile(
    rf"^(?P<ecosystem>{PART}):(?P<type>{PART}):(?P<source>{PART}):"
    r"(?P<id>[A-Za-z0-9_\-/.]+?)(?:@(?P<version>[A-Za-z0-9_\-]+))?(?:\+(?P<file>[A-Za-z0-9]+))?"
    r"(?:\.(?P<format>[A-Za-z0-9_\-]+))?$",
    re.IGNORECASE,
)
MAX_ID = 2**63 - 1

# AIR types → this daemon's model types, where the AIR name is not itself one of them.
AIR_TYPES = {
    "model": "checkpoint",
    "hypernet": "hypernetwork",
    "motion": "motionmodule",
    "ag": "aestheticgradient",
    "diffusionmodel": "diffusion_models",
    "clipvision": "clip_vision",
}
# AIR types that name no folder of their own: the model's type on Civitai decides.
NO_FOLDER = {"unknown", "visionlanguage", "other"}


@dataclass(frozen=True)
class Air:
    ecosystem: str
    type: str
    model_id: int
    version_id: int | None = None
    file_id: int | None = None
    format: str | None = None

    @property
    def model_type(self) -> str | None:
        """The folder the AIR's type names (lycoris → locon, embedding → embedding), or None."""
        kind = self.type.lower()
        if kind in NO_FOLDER:
            return None
        return model_type_of(AIR_TYPES.get(kind, kind))


def is_air(text: object) -> bool:
    """It is meant as an AIR: it starts with `urn:air:` (any case)."""
    return isinstance(text, str) and text.strip().lower().startswith(PREFIX)


def _number(value: str | None, what: str, text: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) <= MAX_ID:
        raise InvalidRequest(f"{text!r}: the {what} must be a Civitai id (a number), not {value!r}")
    return int(value)


def parse_air(text: str) -> Air:
    """The Civitai model, version and file an AIR names; InvalidRequest saying why not."""
    value = text.strip()
    if not value.lower().startswith(PREFIX):
        raise InvalidRequest(f"{value!r} is not an AIR: it must start with 'urn:air:'")
    m = AIR_RE.fullmatch(value[len(PREFIX) :])
    if m is None:
        raise InvalidRequest(
            f"{value!r} is not a valid AIR: the form is "
            f"urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>, "
            f"e.g. urn:air:sdxl:lora:civitai:328553@368189"
        )
    if m["source"].lower() != SOURCE:
        raise InvalidRequest(
            f"{value!r} names the source {m['source']!r}: only Civitai AIRs "
            f"(urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>) can be downloaded"
        )
    return Air(
        ecosystem=m["ecosystem"].lower(),
        type=m["type"].lower(),
        model_id=_number(m["id"], "model id", value) or 0,
        version_id=_number(m["version"], "version id", value),
        file_id=_number(m["file"], "file id", value),
        format=m["format"],
    )
