"""Sidecar files beside each model, in the names and shapes the tools beside it read (SPEC §12).

Checked against those tools' code:

- `<stem>.preview.png` only. Civitai Helper (butaixianran/Stable-Diffusion-Webui-Civitai-Helper,
  scripts/ch_lib/civitai.py `get_preview_image_by_model_path`; zixaphir's fork, same file) looks
  for `base + ".preview.png"` and nothing else: any other name, it downloads the image again.
  A1111 (modules/ui_extra_networks.py `find_preview`: `path + ".preview." + ext` for png, jpg,
  webp...) and ComfyUI-Lora-Manager (py/utils/constants.py `PREVIEW_EXTENSIONS`) take `.png`
  too. So whatever Civitai serves (jpeg, webp, gif: its first frame; a video: a still from its
  CDN) is converted to PNG with Pillow.
- `<stem>.civitai.info` with ASCII escapes: Civitai Helper reads it with `open(path, 'r')`
  (scripts/ch_lib/model.py `load_model_info`), the locale's encoding (cp1252, GBK on Windows);
  `\\uXXXX` escapes read the same in every one of them.
- For a file that is not Civitai's primary one, the sidecar says which file it describes:
  ComfyUI-Lora-Manager (py/services/model_scanner.py `_process_model_file`, then
  py/utils/models.py `from_civitai_info`) takes the first entry of `files` with `primary` for
  the file's size (`sizeKB`) and SHA256. See `describe_download`.
- `<stem>.json`, A1111's own metadata file, completed and never overwritten: see library/a1111.py.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import posixpath
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

import errors
import safefs
from engine.jobs import PREVIEW_SUFFIX
from library.a1111 import write_a1111_json
from library.catalog import is_video
from sources.civitai import USER_AGENT, CivitaiClient

log = logging.getLogger("civitai.metadata")


class ImageHostRefused(errors.PreviewUnavailable):
    status_code = 422


class ImageNotFound(errors.PreviewUnavailable):
    status_code = 404


MAX_PREVIEW = 50 * 1024 * 1024  # bytes of one image fetched
MAX_PREVIEW_PIXELS = 40_000_000  # a larger image is refused before it is decoded
# The preview's longest side: Civitai's largest listed width (an `original=true` photo would be
# a PNG of tens of MiB beside every model; the tools show it as a card).
MAX_PREVIEW_SIDE = 1280
# Where Civitai's answers put their images (imagecache: older answers); besides these, only the
# configured civitai_base_url's own origin. Any other host, asked directly or by a redirect, is
# never fetched: a version answer must not make the daemon read a page inside the network.
IMAGE_HOSTS = ("image.civitai.com", "imagecache.civitai.com")
MAX_REDIRECTS = 5
IMAGE_HEADERS = {"User-Agent": USER_AGENT}  # no Authorization: images are public
NOTE_KEY = "civitai_daemon"  # what the daemon changed in Civitai's answer, and why


def info_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".civitai.info")


def preview_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + PREVIEW_SUFFIX)


def describe_download(
    info: dict[str, Any], file_id: int | None, sha256: str | None
) -> dict[str, Any]:
    """Civitai's version JSON made to describe the file downloaded (by id, else by SHA256): it
    comes first in `files` with `"primary": true`, every other file `"primary": false`, and the
    note `civitai_daemon` names both when Civitai's primary file was another one. LoRA Manager
    reads the size and SHA256 of the first primary file; without this, a pruned fp16 file would
    be listed with the full file's hash and size."""
    files = [f for f in info.get("files") or [] if isinstance(f, dict)]
    sha = (sha256 or "").lower()
    mine = next((f for f in files if file_id is not None and f.get("id") == file_id), None)
    mine = mine or next(
        (f for f in files if sha and str((f.get("hashes") or {}).get("SHA256", "")).lower() == sha),
        None,
    )
    if mine is None:
        return info
    primary = next((f for f in files if f.get("primary")), None)
    if primary is mine and files[0] is mine and sum(bool(f.get("primary")) for f in files) == 1:
        return info  # already says so
    described = copy.deepcopy(info)
    others = [{**copy.deepcopy(f), "primary": False} for f in files if f is not mine]
    described["files"] = [{**copy.deepcopy(mine), "primary": True}, *others]
    described[NOTE_KEY] = {
        "downloaded_file_id": mine.get("id"),
        "primary_on_civitai": primary.get("id") if primary else None,
        "note": "files[0] is the file downloaded, marked primary; Civitai's primary is named here",
    }
    return described


def info_bytes(info: dict[str, Any]) -> bytes:
    """The sidecar's bytes: plain ASCII, every other character as a `\\uXXXX` escape."""
    return (json.dumps(info, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def still_url(url: str) -> str:
    """The first frame of a video on Civitai's image CDN, as a JPEG. The CDN takes its options in
    the path segment before the name: `<key>/<uuid>/<options>/<name>`. Civitai's own site asks
    for a video's poster with `anim=false,transcode=true` and the `.jpeg` name
    (civitai/civitai src/client-utils/cf-images-utils.ts `useEdgeUrl`, edge-url `getEdgeUrl`)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if len(segments) < 4:  # "", key, uuid, name: no room for options
        return url
    name = PurePosixPath(segments[-1]).stem + ".jpeg"
    width = next((o for o in segments[-2].split(",") if o.startswith("width=")), "width=450")
    options = f"anim=false,transcode=true,{width}"
    if len(segments) == 4:  # no options segment yet
        segments = [*segments[:-1], options, name]
    else:
        segments = [*segments[:-2], options, name]
    return urlunsplit(parts._replace(path="/".join(segments)))


def preview_source(images: list[Any]) -> str | None:
    """The URL to fetch the preview from: the first still image, else a still of the first
    video (Civitai marks them `"type": "video"`)."""
    listed = [i for i in images if isinstance(i, dict) and i.get("url")]
    still = next((i for i in listed if not is_video(i)), None)
    if still is not None:
        return str(still["url"])
    return still_url(str(listed[0]["url"])) if listed else None


def to_png(data: bytes) -> bytes:
    """`data` (any image Pillow reads; of an animation, its first frame) as PNG bytes, turned
    upright by its EXIF orientation, 8 bits a channel, at most MAX_PREVIEW_SIDE a side."""
    out = io.BytesIO()
    first_frame(data, (MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE)).save(out, format="PNG")
    return out.getvalue()


def first_frame(data: bytes, box: tuple[int, int]) -> Image.Image:
    """The first frame of the image in `data`, upright by its EXIF orientation, RGB (RGBA when
    it has transparency) at 8 bits a channel, shrunk to fit `box`. An image of more than
    MAX_PREVIEW_PIXELS is refused before it is decoded; so is what Pillow cannot read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PREVIEW_PIXELS:
                raise errors.PreviewUnavailable(
                    f"the image has {im.width}x{im.height} pixels, over {MAX_PREVIEW_PIXELS:,}"
                )
            im.seek(0)
            keep_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            frame = _eight_bit(ImageOps.exif_transpose(im))
            frame = frame.convert("RGBA" if keep_alpha else "RGB")
            frame.thumbnail(box, Image.Resampling.LANCZOS)
            return frame
    except Image.DecompressionBombError as exc:
        raise errors.PreviewUnavailable(f"the image is a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise errors.PreviewUnavailable(
            f"the answer is not an image Pillow can read ({exc})"
        ) from None


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit grey image (mode I;16 or I, as Pillow reads a 16-bit PNG) scaled to 8 bits:
    converted as it is, every value over 255 would turn white."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return im


async def write_sidecars(
    model_path: Path,
    info: dict[str, Any],
    http: httpx.AsyncClient,
    civitai: CivitaiClient,
    file_id: int | None = None,
    sha256: str | None = None,
) -> list[Path]:
    """Write `<stem>.civitai.info` (describing the file downloaded), A1111's `<stem>.json`
    (a person's values in it kept) and `<stem>.preview.png`; a failure is logged, never raised:
    the model is in place either way."""
    written: list[Path] = []
    target = info_path(model_path)
    try:
        data = info_bytes(describe_download(info, file_id, sha256))
        await asyncio.to_thread(safefs.write_atomic, target, data)
        written.append(target)
    except OSError as exc:
        log.warning("cannot write %s: %s", target, exc)
    try:
        if a1111 := await asyncio.to_thread(write_a1111_json, model_path, info, sha256):
            written.append(a1111)
    except OSError as exc:
        log.warning("cannot write the A1111 metadata of %s: %s", model_path.name, exc)
    url = preview_source(info.get("images") or [])
    if url is None:
        return written
    target = preview_path(model_path)
    try:
        png = await asyncio.to_thread(to_png, await fetch_image(url, http, civitai))
        await asyncio.to_thread(safefs.write_atomic, target, png)
    except errors.PreviewUnavailable as exc:
        log.warning("no preview for %s from %s: %s", model_path.name, url, exc)
        return written
    except OSError as exc:
        log.warning("cannot write %s: %s", target, exc)
        return written
    written.append(target)
    return written


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        default if parts.port is None else parts.port,
    )


def check_image_host(url: str, civitai: CivitaiClient) -> None:
    """Raise ImageHostRefused unless `url` is on Civitai's image hosts over https, or on the
    configured civitai_base_url's origin (same scheme, host and port: a local test server may
    speak plain http)."""
    try:
        scheme, host, port = _origin(url)
    except ValueError as exc:  # a bad port, an unclosed [IPv6 address
        raise ImageHostRefused(f"{url!r} is not a URL ({exc}): not fetched") from None
    # A user name (`https://image.civitai.com@elsewhere/`, `https://x\@image.civitai.com/`:
    # one host to Python, another to a browser) is never in Civitai's image URLs; nor a port.
    plain = "@" not in urlsplit(url).netloc
    if plain and scheme == "https" and host in IMAGE_HOSTS and port == 443:
        return
    if plain and (scheme, host, port) == _origin(civitai.base_url):
        if _is_api_path(urlsplit(url).path):
            raise ImageHostRefused(
                f"{url!r} is on Civitai's API or download paths, not an image: not fetched"
            )
        return
    allowed = ", ".join((*(f"https://{h}" for h in IMAGE_HOSTS), civitai.base_url))
    raise ImageHostRefused(
        f"{urlsplit(url).netloc or url!r} is not one of Civitai's image hosts ({allowed}): "
        f"not fetched"
    )


def _is_api_path(path: str) -> bool:
    """A path the server may read as under /api/ (Civitai's API and its downloads): checked
    as decoded and with its dot segments resolved, in any case, `\\` taken for `/`."""
    plain = posixpath.normpath("/" + unquote(path).replace("\\", "/"))
    first = plain.lstrip("/").split("/", 1)[0]
    return first.lower() == "api"


async def fetch_image(
    url: str, http: httpx.AsyncClient, civitai: CivitaiClient, limit: int = MAX_PREVIEW
) -> bytes:
    """The image's bytes, read no further than `limit`, from Civitai's image hosts only: each
    redirect is followed by hand, after its target's host is checked. Never with the Civitai
    token: an image needs none, and the token must not go where a caller's URL points."""
    try:
        for _ in range(MAX_REDIRECTS + 1):
            check_image_host(url, civitai)
            async with http.stream("GET", url, headers=IMAGE_HEADERS) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code == 404:
                    raise ImageNotFound("Civitai's image host answered 404 Not Found")
                if response.status_code != 200:
                    raise errors.PreviewUnavailable(f"the answer was HTTP {response.status_code}")
                return await _read_capped(response, limit)
        raise errors.PreviewUnavailable(f"more than {MAX_REDIRECTS} redirects")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise errors.PreviewUnavailable(f"the image was not fetched ({exc})") from None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    too_big = errors.PreviewUnavailable(f"the image is over {limit / (1024 * 1024):g} MiB")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)
