"""A1111's own `<stem>.json` beside each download (issue 26, item 2), read back from disk the way
A1111 and sd-civitai-browser-plus read it: their code is ported below, line for line where it
matters (sources in tests/fixtures/SOURCES.md)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import run_job, wait_job
from tests.test_updates import tracked

# A1111 extensions-builtin/Lora/network.py `class SdVersion(enum.Enum)` (commit f2844bd):
# Unknown, SD1, SD2, SDXL. (modules/ui_extra_networks_textual_inversion.py has its own copy.)
SD_VERSIONS = ("Unknown", "SD1", "SD2", "SDXL")
FROM_DISK = "<sd version read from the file's own metadata>"
DEFAULT_MULTIPLIER = "opts.extra_networks_default_multiplier"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def a1111_get_user_metadata(filename: str) -> dict[str, Any]:
    """A1111 modules/extra_networks.py `get_user_metadata` (commit 0a277ab), as it is."""
    basename, _ext = os.path.splitext(filename)
    metadata_filename = basename + ".json"
    metadata: dict[str, Any] = {}
    if os.path.isfile(metadata_filename):
        with open(metadata_filename, encoding="utf8") as file:
            metadata = json.load(file)
    return metadata


def a1111_lora_card(filename: str, alias: str) -> dict[str, Any]:
    """What A1111's Lora tab makes of a file: modules/ui_extra_networks.py `read_user_metadata`
    (description), extensions-builtin/Lora/ui_extra_networks_lora.py `create_item` (commit
    01a40c6: the prompt from `activation text` and `preferred weight`, `sd version` only when an
    SdVersion member) and ui_edit_user_metadata.py `put_values_into_components` (commit 0098b29:
    `float(user_metadata.get('preferred weight', 0.0))`, which must not raise)."""
    user_metadata = a1111_get_user_metadata(filename)
    item: dict[str, Any] = {"description": None, "user_metadata": user_metadata}
    desc = user_metadata.get("description", None)
    if desc is not None:
        item["description"] = desc
    activation_text = user_metadata.get("activation text")
    preferred_weight = user_metadata.get("preferred weight", 0.0)
    weight = str(preferred_weight) if preferred_weight else DEFAULT_MULTIPLIER
    item["prompt"] = f"<lora:{alias}:{weight}>"
    if activation_text:
        item["prompt"] += " " + activation_text
    sd_version = user_metadata.get("sd version")
    item["sd_version"] = sd_version if sd_version in SD_VERSIONS else FROM_DISK
    item["slider"] = float(user_metadata.get("preferred weight", 0.0))
    item["notes"] = user_metadata.get("notes", "")
    return item


def browser_plus_install_status(folder: Path, item: dict[str, Any]) -> str | None:
    """sd-civitai-browser-plus scripts/civitai_api.py (commit b3d3ecf, the model list, lines
    180-262): every `.json` under the type's folder gives a sha256; a Civitai file is installed
    when `<name>_<file id><ext>` is on disk or its SHA256 is one of those."""
    existing_files: set[str] = set()
    existing_files_sha256: set[str] = set()
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for file in files:
            existing_files.add(file.lower())
            if file.endswith(".json"):
                with open(os.path.join(root, file), encoding="utf-8") as f:
                    try:
                        json_file = json.load(f)
                    except Exception:
                        continue
                    if isinstance(json_file, dict) and (sha256 := json_file.get("sha256")):
                        existing_files_sha256.add(sha256.upper())
    installstatus = None
    for version in reversed(item["modelVersions"]):
        for file in version.get("files", []):
            file_name, file_extension = os.path.splitext(file["name"])
            file_name = f"{file_name}_{file['id']}{file_extension}"
            file_sha256 = file.get("hashes", {}).get("SHA256", "").upper()
            name_match = file_name.lower() in existing_files
            sha256_match = file_sha256 in existing_files_sha256
            if name_match or sha256_match:
                if version == item["modelVersions"][0]:
                    installstatus = "civmodelcardinstalled"
                else:
                    installstatus = "civmodelcardoutdated"
    return installstatus


def civitai_model(civitai, model_id: int) -> dict[str, Any]:
    """The model as Civitai's API answers it, the answer sd-civitai-browser-plus lists."""
    r = httpx.get(f"{civitai.base_url}/api/v1/models/{model_id}")
    assert r.status_code == 200, r.text
    return r.json()


def add_lora(civitai, model_id, version_id, content, filename, **version):
    f = civitai.file(content, name=filename)
    civitai.add_model(
        model_id, f"Model {model_id}", "LORA", [civitai.version(version_id, [f], **version)]
    )
    return f


def test_a_download_writes_the_json_a1111_reads_with_trigger_words_and_base_model(
    civitai, daemon, home
):
    content = os.urandom(20_000)
    add_lora(
        civitai,
        1,
        10,
        content,
        "soft light.safetensors",
        base_model="SD 1.5",
        trained_words=["soft light", " rim glow "],
        description="<p>Soft <b>light</b> &amp; shadow</p><ul><li>ドリーム</li></ul>",
    )
    d = daemon()
    job = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    model = Path(job["path"])
    folder = model.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "soft light.civitai.info",
        "soft light.json",
        "soft light.preview.png",
        "soft light.safetensors",
    ]
    raw = (folder / "soft light.json").read_bytes()
    assert "ドリーム".encode() in raw  # UTF-8 as A1111 writes it, not \u escapes
    card = a1111_lora_card(str(model), "soft light")
    assert card["prompt"] == f"<lora:soft light:{DEFAULT_MULTIPLIER}> soft light, rim glow"
    assert card["sd_version"] == "SD1"
    assert card["slider"] == 0.0
    assert card["description"] == "Soft light & shadow\nドリーム"
    assert card["notes"] == ""
    meta = card["user_metadata"]
    assert meta["sha256"] == sha(model.read_bytes()).upper()
    assert (meta["modelId"], meta["modelVersionId"]) == (1, 10)


def test_sd_version_is_named_as_a1111_names_it(civitai, daemon, home):
    bases = {"SD 2.1": "SD2", "SDXL 1.0": "SDXL", "Pony": "SDXL", "Flux.1 D": "Unknown"}
    for n, base in enumerate(bases, start=1):
        add_lora(civitai, n, n * 10, os.urandom(3000), f"m{n}.safetensors", base_model=base)
    d = daemon()
    with d.client() as c:
        ids = [
            c.post("/api/download", json={"modelVersionId": n * 10, "model_type": "lora"}).json()
            for n in range(1, len(bases) + 1)
        ]
        paths = [wait_job(c, j["id"])["path"] for j in ids]
    d.stop()
    got = [a1111_lora_card(p, "x")["sd_version"] for p in paths]
    assert got == list(bases.values())


def test_sd_civitai_browser_plus_lists_the_download_as_installed_then_outdated(
    civitai, daemon, home
):
    content = os.urandom(9000)
    add_lora(civitai, 1, 10, content, "style.safetensors")
    d = daemon()
    job = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    folder = Path(job["path"]).parent
    # Its own file naming (`<name>_<file id>.<ext>`) is not ours: only the sha256 can match.
    assert browser_plus_install_status(folder, civitai_model(civitai, 1)) == "civmodelcardinstalled"
    newer = civitai.file(os.urandom(9100), name="style_v2.safetensors")
    civitai.publish_version(1, civitai.version(11, [newer]))
    assert browser_plus_install_status(folder, civitai_model(civitai, 1)) == "civmodelcardoutdated"
    # Without our `<stem>.json` it would not know the file (issue 26's report).
    (folder / "style.json").unlink()
    assert browser_plus_install_status(folder, civitai_model(civitai, 1)) is None


def test_a_persons_edits_survive_an_update_of_the_same_file(civitai, daemon, home):
    """The person sets activation text, weight and notes and empties the description in A1111's
    editor; a new version arrives under the same name: their values stay, the empty one and the
    facts about the file (sha256, version) are the new version's."""
    old, new = b"old lora" * 300, b"new lora" * 400
    d, c = tracked(civitai, daemon, home, [("same.safetensors", old)], old_versions="delete")
    model = home / "data/models/lora/same.safetensors"
    meta_path = model.with_name("same.json")
    meta = json.loads(meta_path.read_text(encoding="utf8"))
    assert meta["activation text"] == "fake" and meta["sha256"] == sha(old).upper()
    meta.update(
        {
            "activation text": "my words",
            "preferred weight": 0.65,
            "notes": "mine",
            "description": "",
        }
    )
    # As A1111's editor writes it (ui_extra_networks_user_metadata.py `write_user_metadata`).
    meta_path.write_text(json.dumps(meta, indent=4, ensure_ascii=False), encoding="utf8")
    version = civitai.version(
        201,
        [civitai.file(new, name="same.safetensors")],
        trained_words=["newword"],
        description="<p>v2 notes</p>",
    )
    civitai.publish_version(1, version)
    result = c.post("/api/updates/check").json()
    assert result["errors"] == []
    [update] = result["updates"]
    job = wait_job(c, update["job_id"])
    d.stop()
    assert job["path"] == str(model) and sha(model.read_bytes()) == sha(new)
    card = a1111_lora_card(str(model), "same")
    assert card["prompt"] == "<lora:same:0.65> my words"
    assert card["notes"] == "mine" and card["slider"] == 0.65
    assert card["description"] == "v2 notes"  # it was empty: filled
    after = card["user_metadata"]
    assert after["sha256"] == sha(new).upper() and after["modelVersionId"] == 201


def test_a_json_of_another_kind_is_never_written_moved_or_deleted_with_the_model(
    civitai, daemon, home
):
    """`vae.json` a person (or a Hugging Face download) put there is not A1111 metadata: the
    download of `vae.safetensors` leaves it as it is, and deleting that model leaves it too;
    the A1111 metadata of another model goes with its model."""
    folder = home / "data/models/lora"
    folder.mkdir(parents=True)
    config = b'{"_class_name": "AutoencoderKL", "scaling_factor": 0.13025}'
    (folder / "vae.json").write_bytes(config)
    add_lora(civitai, 1, 10, os.urandom(4000), "vae.safetensors")
    add_lora(civitai, 2, 20, os.urandom(4000), "mine.safetensors")
    d = daemon()
    first = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    second = run_job(d, {"modelVersionId": 20, "model_type": "lora"})
    assert (folder / "vae.json").read_bytes() == config
    assert (folder / "mine.json").is_file()
    with d.client() as c:
        rows = {r["path"]: r["id"] for r in c.get("/api/completed").json()["completed"]}
        for job in (first, second):
            r = c.delete(f"/api/library/{rows[job['path']]}")
            assert r.status_code == 200, r.text
    d.stop()
    assert (folder / "vae.json").read_bytes() == config
    assert not (folder / "mine.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["vae.json"]


def test_a_link_at_the_json_name_is_replaced_never_read_or_written_through(civitai, daemon, home):
    folder = home / "data/models/lora"
    folder.mkdir(parents=True)
    secret = home / "secret.json"
    secret.write_text('{"description": "private", "notes": "do not copy"}')
    (folder / "linked.json").symlink_to(secret)
    add_lora(civitai, 1, 10, os.urandom(4000), "linked.safetensors")
    d = daemon()
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    assert not (folder / "linked.json").is_symlink()
    assert secret.read_text() == '{"description": "private", "notes": "do not copy"}'
    written = json.loads((folder / "linked.json").read_text(encoding="utf8"))
    assert written["notes"] == "" and written["description"] == "made by the fake"
