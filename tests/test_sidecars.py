"""Sidecars the tools beside the daemon actually read: `<stem>.preview.png` (Civitai Helper reads
no other name), `<stem>.civitai.info` in ASCII (Civitai Helper reads it in the locale's encoding)
that describes the file downloaded (LoRA Manager reads the primary file's size and SHA256)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from PIL import Image

from config.settings import load_settings
from library.sidecars import write_sidecars
from sources.civitai import CivitaiClient
from tests.conftest import run_async, run_job, wait_job, write_config
from tests.fake_civitai import GREEN, IMAGE_KEY, RED, FakeCivitai

FIXTURES = Path(__file__).parent / "fixtures"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def first_pixel(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path} is {im.format}"
        return im.convert("RGB").getpixel((0, 0))


def near(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(color, expected, strict=True))  # jpeg, webp: lossy


def lora_manager_file(info: dict[str, Any]) -> dict[str, Any]:
    """What ComfyUI-Lora-Manager takes from a `.civitai.info` (model_scanner.py
    `_process_model_file`, models.py `from_civitai_info`): the first file marked primary."""
    f = next(f for f in info["files"] if f.get("primary"))
    return {"size": f.get("sizeKB", 0) * 1024, "sha256": f["hashes"].get("SHA256", "").lower()}


def previews_logged(home: Path, name: str) -> list[str]:
    log = (home / "logs" / "download.log").read_text()
    return [line for line in log.splitlines() if f"no preview for {name}" in line]


# Previews ---------------------------------------------------------------------------------


def test_every_image_format_civitai_serves_becomes_a_png_preview_and_a_video_its_still(
    civitai, daemon, home
):
    # One version per kind of preview Civitai serves, each file named after it.
    kinds = {
        "jpeg": ["jpeg"],
        "webp": ["webp"],
        "png": ["png"],
        "gif": ["gif"],  # animated: its first frame is red, its second blue
        "video-then-image": ["mp4", "webp"],
        "video-only": ["mp4"],
    }
    for n, (kind, media) in enumerate(kinds.items(), start=1):
        f = civitai.file(b"m" * (1000 + n), name=f"{kind}.safetensors")
        civitai.add_model(n, f"Model {kind}", "LORA", [civitai.version(n * 10, [f], media=media)])
    d = daemon()
    folder = home / "data" / "models" / "lora"
    with d.client() as c:
        ids = []
        for n in range(1, len(kinds) + 1):
            r = c.post("/api/download", json={"modelVersionId": n * 10, "model_type": "lora"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for job_id in ids:
            wait_job(c, job_id)
        rows = c.get("/api/completed").json()["completed"]
    assert all(row["has_preview"] for row in rows) and len(rows) == len(kinds)
    for kind in kinds:
        assert sorted(p.name for p in folder.glob(f"{kind}.*")) == [
            f"{kind}.civitai.info",
            f"{kind}.json",
            f"{kind}.preview.png",
            f"{kind}.safetensors",
        ]
        expected = GREEN if kind == "video-only" else RED  # the gif's first frame, not blue
        color = first_pixel(folder / f"{kind}.preview.png")
        assert near(color, expected), f"{kind}: {color}"
    # A video and an image: the image is taken, the video never fetched.
    videos = [r.path for r in civitai.requests_to("api") if r.path.endswith(".mp4")]
    assert videos == []
    # Only a video: its still, asked for the way Civitai's site asks (anim=false).
    stills = [r.path for r in civitai.requests_to("api") if "anim=false" in r.path]
    assert len(stills) == 1 and stills[0].endswith("/anim=false,transcode=true,width=450/0.jpeg")
    assert not list(folder.glob("*.preview.jpeg")) and not list(folder.glob("*.preview.webp"))

    # What Civitai answers is not an image (a Cloudflare page), or is a decompression bomb:
    # no preview, one line in the log, and the job still completes with its .civitai.info.
    civitai.add_model(7, "Page", "LORA", [civitai.version(70, [b"p" * 700], media=["mp4"])])
    civitai.models[7].versions[0].files[0].name = "page.safetensors"
    civitai.add_model(8, "Bomb", "LORA", [civitai.version(80, [b"b" * 800], media=["png"])])
    civitai.models[8].versions[0].files[0].name = "bomb.safetensors"
    civitai.fault("img", html=True)
    page = run_job(d, {"modelVersionId": 70, "model_type": "lora"})
    civitai.fault("img", status=200, body=png_claiming(20_000, 20_000))
    bomb = run_job(d, {"modelVersionId": 80, "model_type": "lora"})
    d.stop()
    for job, name in ((page, "page"), (bomb, "bomb")):
        assert job["status"] == "completed"
        assert sorted(p.name for p in folder.glob(f"{name}.*")) == [
            f"{name}.civitai.info",
            f"{name}.json",
            f"{name}.safetensors",
        ]
    [line] = previews_logged(home, "page.safetensors")
    assert "anim=false" in line and "is not an image Pillow can read" in line, line
    [line] = previews_logged(home, "bomb.safetensors")
    assert "decompression bomb" in line, line


def test_a_preview_is_fetched_only_from_civitais_image_hosts_never_elsewhere_nor_by_redirect(
    civitai, daemon, home
):
    # A version answer naming a host inside the network (the fake's CDN stands for an admin page
    # on another origin): it serves a real PNG, so a preview on disk would prove it was read.
    inside = f"{civitai.cdn_url}/{IMAGE_KEY}/00000000-0000-4000-8000-000000000000/width=450/a.png"
    hostile = {
        "direct": inside,
        "redirected": f"{civitai.base_url}/redirect?to={quote(inside, safe='')}",
    }
    for n, (name, url) in enumerate(hostile.items(), start=1):
        f = civitai.file(b"h" * (500 + n), name=f"{name}.safetensors")
        civitai.add_model(n, name, "LORA", [civitai.version(n * 10, [f])])
        civitai.models[n].versions[0].image_urls = [url]
    d = daemon()
    jobs = [run_job(d, {"modelVersionId": n * 10, "model_type": "lora"}) for n in (1, 2)]
    d.stop()
    assert [job["status"] for job in jobs] == ["completed", "completed"]
    folder = home / "data" / "models" / "lora"
    for name in hostile:
        assert sorted(p.name for p in folder.glob(f"{name}.*")) == [
            f"{name}.civitai.info",
            f"{name}.json",
            f"{name}.safetensors",
        ]
        [line] = previews_logged(home, f"{name}.safetensors")
        assert "not one of Civitai's image hosts" in line and "127.0.0." in line, line
    assert civitai.requests_to("cdn", f"/{IMAGE_KEY}/") == []  # never asked, not even once
    assert len(civitai.requests_to("api", "/redirect")) == 1  # the allowed host was asked


def test_an_image_larger_than_the_pixel_cap_is_refused_before_it_is_decoded():
    import errors
    from library.sidecars import MAX_PREVIEW_PIXELS, to_png

    big = png_claiming(8000, 6000)  # 48 MP: under Pillow's own bomb limit, over ours
    assert 8000 * 6000 > MAX_PREVIEW_PIXELS
    with pytest.raises(errors.PreviewUnavailable, match="8000x6000 pixels, over 40,000,000"):
        to_png(big)
    with pytest.raises(errors.PreviewUnavailable, match="not an image Pillow can read"):
        to_png(b"\x00\x00\x00\x20ftypisom")


def encoded(im: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **options)
    return out.getvalue()


def test_previews_of_odd_images_are_pngs_as_a_person_sees_them_and_at_most_1280_pixels_wide():
    from library.sidecars import MAX_PREVIEW_SIDE, to_png

    def png(data: bytes) -> Image.Image:
        im = Image.open(io.BytesIO(to_png(data)))
        assert im.format == "PNG" and im.mode in ("RGB", "RGBA"), (im.format, im.mode)
        return im

    # A phone photo stored landscape with "rotate 90°" in its EXIF: shown upright (portrait).
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = Image.new("RGB", (80, 40), RED)
    assert png(encoded(photo, "JPEG", exif=exif.tobytes())).size == (40, 80)
    # A 16-bit grey PNG at half brightness stays grey (a plain convert clips it to white).
    grey = png(encoded(Image.new("I;16", (4, 3), 0x8000), "PNG")).getpixel((0, 0))
    assert all(120 <= c <= 136 for c in grey), grey
    # CMYK JPEG: its colours, not inverted ones; a palette PNG with a transparent index keeps it.
    assert near(
        png(encoded(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "JPEG")).getpixel((0, 0)),
        (255, 0, 0),
    )
    palette = Image.new("P", (4, 3), 1)
    palette.putpalette([0, 0, 0, *RED] + [0] * 762)
    clear = png(encoded(palette, "PNG", transparency=1))
    assert clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0
    # An `original=true` photo of 6000x4000: a preview of at most MAX_PREVIEW_SIDE a side.
    big = png(encoded(Image.new("RGB", (6000, 4000), GREEN), "JPEG"))
    assert MAX_PREVIEW_SIDE == 1280 and big.size == (1280, 853), big.size
    # An SVG is no image Pillow reads: no preview, a sentence saying so.
    import errors

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
    with pytest.raises(errors.PreviewUnavailable, match="not an image Pillow can read"):
        to_png(svg)


# .civitai.info ----------------------------------------------------------------------------


def test_civitai_info_is_ascii_and_reads_back_the_same_in_cp1252_and_gbk(civitai, daemon, home):
    name = "ドリーム Ünïcode"
    civitai.add_simple(1, 10, b"u" * 4000, filename="dream.safetensors")
    civitai.models[1].name = name
    d = daemon()
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    raw = (home / "data" / "models" / "lora" / "dream.civitai.info").read_bytes()
    assert raw.isascii() and b"\\u30c9\\u30ea" in raw  # ド, リ as escapes
    for encoding in ("cp1252", "gbk", "utf-8"):  # what Civitai Helper's open(path, "r") may use
        with open(home / "data/models/lora/dream.civitai.info", encoding=encoding) as f:
            assert json.load(f)["model"]["name"] == name


def test_the_sidecar_of_a_non_primary_file_describes_the_file_downloaded(civitai, daemon, home):
    full = civitai.file(b"F" * 9000, name="style_full.safetensors", primary=True, fp="fp32")
    pruned = civitai.file(b"p" * 5000, name="style_pruned.safetensors", primary=False)
    training = civitai.file(b"z" * 300, name="data.zip", primary=False, type="Training Data")
    civitai.add_model(1, "Style", "LORA", [civitai.version(10, [full, pruned, training])])
    d = daemon()
    request = {"modelVersionId": 10, "fileId": pruned.id, "model_type": "lora"}
    job = run_job(d, request)
    primary_job = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    on_disk = Path(job["path"])
    assert on_disk.name == "style_pruned.safetensors" and on_disk.read_bytes() == pruned.content
    info = json.loads(on_disk.with_name("style_pruned.civitai.info").read_bytes())
    # What LoRA Manager reads is the file on disk, not Civitai's primary one.
    assert lora_manager_file(info) == {"size": 5000, "sha256": sha(on_disk.read_bytes())}
    assert [(f["id"], f["primary"]) for f in info["files"]] == [
        (pruned.id, True),
        (full.id, False),
        (training.id, False),
    ]
    assert info["civitai_daemon"]["downloaded_file_id"] == pruned.id
    assert info["civitai_daemon"]["primary_on_civitai"] == full.id
    # Civitai's primary file: its answer as it was, without a note.
    primary_info = json.loads(
        Path(primary_job["path"]).with_name("style_full.civitai.info").read_bytes()
    )
    assert "civitai_daemon" not in primary_info
    assert lora_manager_file(primary_info) == {"size": 9000, "sha256": sha(full.content)}
    assert [f["id"] for f in primary_info["files"]] == [full.id, pruned.id, training.id]


# Every recorded Civitai answer ------------------------------------------------------------


def recorded_versions() -> list[tuple[str, dict[str, Any]]]:
    """Every version in tests/fixtures: the model-version answers, and those inside the model
    and model-list answers (with their model's name and type, as the daemon adds them)."""
    found = []
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if path.name.startswith("model_version_"):
            found.append((path.name, data))
            continue
        models = data.get("items") if "items" in data else [data] if "modelVersions" in data else []
        for model in models:
            for v in model.get("modelVersions") or []:
                described = {**v, "model": {"name": model.get("name"), "type": model.get("type")}}
                found.append((f"{path.name}#{v['id']}", described))
    return found


def on_fake_cdn(version: dict[str, Any], fake: FakeCivitai) -> dict[str, Any]:
    """The version with its image URLs on the fake's image host (same paths as Civitai's)."""
    images = [
        {**i, "url": fake.base_url + urlsplit(i["url"]).path} for i in version.get("images") or []
    ]
    return {**version, "images": images}


def test_every_recorded_civitai_answer_gets_an_info_describing_its_file_and_a_png_preview(
    civitai, home, tmp_path
):
    versions = recorded_versions()
    # 2 model-version answers, 2 versions of model 1580878, 31 of DreamShaper, 2 in the list.
    assert len(versions) >= 37, [source for source, _ in versions]
    write_config(home, civitai_base_url=civitai.base_url)
    settings = load_settings(home)
    folder = tmp_path / "models"
    folder.mkdir()
    checked: dict[str, Any] = {"non-primary": 0, "previews": 0, "sd versions": set()}

    async def write_all() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            client = CivitaiClient(settings, http)
            for n, (source, version) in enumerate(versions):
                files = version.get("files") or []
                if not files:
                    continue
                # A non-primary file where the version has one: the case tools get wrong.
                chosen = next((f for f in files if not f.get("primary")), files[0])
                model = folder / f"m{n}.safetensors"
                model.write_bytes(source.encode())
                written = await write_sidecars(
                    model, on_fake_cdn(version, civitai), http, client, file_id=chosen["id"]
                )
                check(source, version, chosen, model, written)

    def check(source, version, chosen, model, written) -> None:
        info_file = model.with_name(model.stem + ".civitai.info")
        raw = info_file.read_bytes()
        assert raw.isascii(), source
        info = json.loads(raw.decode("gbk"))
        assert info["id"] == version["id"] and info["model"] == version["model"], source
        primary = [f["id"] for f in info["files"] if f.get("primary")]
        assert primary == [chosen["id"]] and info["files"][0]["id"] == chosen["id"], source
        assert lora_manager_file(info)["sha256"] == chosen["hashes"]["SHA256"].lower(), source
        assert len(info["files"]) == len(version["files"]), source
        if not chosen.get("primary"):
            checked["non-primary"] += 1
            assert info["civitai_daemon"]["downloaded_file_id"] == chosen["id"], source
        # A1111's `<stem>.json` from each real answer (tests/test_a1111_json.py reads it as
        # A1111 does): its trigger words, its base model as A1111 names it.
        a1111 = model.with_name(model.stem + ".json")
        meta = json.loads(a1111.read_text(encoding="utf8"))
        words = [w.strip() for w in version.get("trainedWords") or [] if w.strip()]
        assert meta["activation text"] == ", ".join(words), source
        assert meta["sd version"] in ("SD1", "SD2", "SDXL", "Unknown"), source
        assert meta["modelVersionId"] == version["id"], source
        checked["sd versions"].add((version.get("baseModel"), meta["sd version"]))
        preview = model.with_name(model.stem + ".preview.png")
        if version.get("images"):
            assert written == [info_file, a1111, preview], source
            with Image.open(preview) as im:
                assert im.format == "PNG" and im.size == (8, 6), source
            checked["previews"] += 1
        else:
            assert written == [info_file, a1111] and not preview.exists(), source

    run_async(write_all())
    assert checked["non-primary"] >= 3 and checked["previews"] >= 30, checked
    assert checked["sd versions"] == {
        ("Illustrious", "SDXL"),  # an SDXL descendant: an SDXL network to A1111
        ("SD 1.5", "SD1"),
        ("SD 1.5 LCM", "SD1"),
    }


# A model named like another model's sidecar --------------------------------------------------


def test_a_file_name_that_is_a_sidecar_or_part_name_is_refused_so_no_model_is_overwritten(
    civitai, daemon, home
):
    """`m.preview.png` as a model's name would be replaced by the preview of `m.safetensors`,
    and `m.safetensors.part` removed when `m.safetensors` starts: refused with 422. A name
    Civitai gives so is changed, and both models stay whole."""
    from engine.jobs import OLD_PREVIEW_SUFFIXES, PREVIEW_SUFFIX, SIDECAR_SUFFIXES

    assert {PREVIEW_SUFFIX, *OLD_PREVIEW_SUFFIXES, ".civitai.info", ".part"} <= set(
        SIDECAR_SUFFIXES
    )
    main, other = b"M" * 5000, b"O" * 4000
    civitai.add_simple(1, 10, main, filename="m.safetensors")
    civitai.add_simple(2, 20, other, filename="m.preview.png")  # as Civitai names it
    d = daemon()
    with d.client() as c:
        for name in ("m.preview.png", "m.civitai.info", "m.safetensors.part", "M.Preview.PNG"):
            r = c.post(
                "/api/download", json={"modelVersionId": 20, "model_type": "lora", "filename": name}
            )
            assert r.status_code == 422, (name, r.text)
            assert "sidecar" in r.json()["detail"], r.text
        renamed = wait_job(
            c,
            c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()["id"],
        )
        first = wait_job(
            c,
            c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()["id"],
        )
    d.stop()
    folder = home / "data" / "models" / "lora"
    assert Path(renamed["path"]) == folder / "m.preview_png"
    assert Path(renamed["path"]).read_bytes() == other
    assert Path(first["path"]).read_bytes() == main
    with Image.open(folder / "m.preview.png") as im:
        assert im.format == "PNG"
