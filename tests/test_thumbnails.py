"""GET /api/civitai/image: the Browse tab's previews through the daemon (issue 18). Only from
Civitai's image hosts, resized to the width asked, a video as its still, kept on disk under
data/thumbnails/ within a size cap, and served with cache headers."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from PIL import Image

from sources.thumbnails import MAX_SOURCE, cache_key, render
from tests.conftest import wait_for, write_config
from tests.fake_civitai import GREEN, IMAGE_KEY, RED, FakeCivitai, image_bytes
from tests.test_sidecars import png_claiming

VIEWER = "viewer-key-for-the-browse-tab"
PHOTO = (1200, 900)  # the size the fake's image host serves here


def near(color: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 10 for a, b in zip(color[:3], expected, strict=True))  # lossy


def photo(civitai, n: int, name: str, options: str = "width=450") -> str:
    """An image URL on the fake's image host (the configured civitai_base_url's origin)."""
    return civitai.image_url(f"00000000-0000-4000-8000-{n:012x}", name, options)


def thumbnail(client: httpx.Client, url: str, width: int, **headers: str) -> httpx.Response:
    return client.get("/api/civitai/image", params={"url": url, "width": width}, headers=headers)


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    im = Image.open(io.BytesIO(response.content))
    assert im.format == "WEBP"
    return im


def cached_files(home: Path) -> dict[str, int]:
    folder = home / "data" / "thumbnails"
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.suffix == ".webp"}


def test_images_shrink_to_the_width_asked_videos_show_their_still_and_hits_come_from_disk(
    civitai, daemon, home
):
    civitai.image_size = PHOTO
    d = daemon(viewer_token=VIEWER)
    viewer = httpx.Client(
        base_url=d.base_url, headers={"Authorization": f"Bearer {VIEWER}"}, timeout=20
    )
    with viewer, d.client() as admin:
        for n, fmt in enumerate(("png", "jpeg", "webp", "gif"), start=1):
            r = thumbnail(viewer, photo(civitai, n, f"{n}.{fmt}"), 300)
            im = decoded(r)
            # 300 is rounded down to the served 256; the 1200x900 photo keeps its shape.
            assert im.size == (256, 192), (fmt, im.size)
            assert near(im.convert("RGB").getpixel((5, 5)), RED), fmt  # a gif: its first frame
            assert r.headers["cache-control"] == "private, max-age=86400"
        # Widths outside 64..1024 are clamped; an image smaller than asked is not enlarged.
        assert decoded(thumbnail(admin, photo(civitai, 1, "1.png"), 5000)).size == (1024, 768)
        assert decoded(thumbnail(admin, photo(civitai, 1, "1.png"), 1)).size == (64, 48)
        civitai.image_size = (8, 6)
        small = photo(civitai, 9, "9.png")
        assert decoded(thumbnail(admin, small, 320)).size == (8, 6)

        # A video: Civitai's still of its first frame (anim=false), the video never fetched.
        video = photo(civitai, 5, "5.mp4")
        still = decoded(thumbnail(viewer, video, 320))
        assert still.size == (8, 6) and near(still.convert("RGB").getpixel((0, 0)), GREEN)
        asked = [r.path for r in civitai.requests_to("api", f"/{IMAGE_KEY}/")]
        assert not [p for p in asked if p.endswith(".mp4")]
        assert [p for p in asked if "anim=false" in p] == [
            f"/{IMAGE_KEY}/00000000-0000-4000-8000-000000000005/anim=false,transcode=true,width=450/5.jpeg"
        ]

        # Asked again: from data/thumbnails/, Civitai not asked; with its ETag: 304, no body.
        url = photo(civitai, 2, "2.jpeg")
        before = len(civitai.requests_to("api", f"/{IMAGE_KEY}/"))
        first = thumbnail(admin, url, 320)
        again = thumbnail(viewer, url, 320)
        assert again.status_code == 200 and again.content == first.content
        etag = first.headers["etag"]
        assert etag == f'"{cache_key(url, 320)}"'
        unchanged = thumbnail(viewer, url, 320, **{"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == etag
        assert len(civitai.requests_to("api", f"/{IMAGE_KEY}/")) == before + 1
        on_disk = home / "data" / "thumbnails" / f"{cache_key(url, 320)}.webp"
        assert on_disk.read_bytes() == first.content

        # No key: 401 in the one error shape; nothing fetched for it.
        anonymous = httpx.get(
            d.url("/api/civitai/image"), params={"url": photo(civitai, 7, "7.png")}, timeout=20
        )
        assert anonymous.status_code == 401 and "API key" in anonymous.json()["detail"]
    assert not civitai.requests_to("api", f"/{IMAGE_KEY}/00000000-0000-4000-8000-000000000007")


def test_an_image_off_civitais_image_hosts_is_refused_and_that_host_never_asked(
    civitai, daemon, home
):
    # The fake's CDN stands for a page inside the network: a real PNG, on another origin.
    inside = f"{civitai.cdn_url}/{IMAGE_KEY}/00000000-0000-4000-8000-000000000000/width=450/a.png"
    refused = {
        "another host": inside,
        "a redirect to another host": f"{civitai.base_url}/redirect?to={quote(inside, safe='')}",
        "Civitai's image host over http": inside.replace(
            civitai.cdn_url, "http://image.civitai.com"
        ),
        "a file URL": "file:///etc/passwd",
    }
    d = daemon()
    with d.client() as c:
        for what, url in refused.items():
            r = thumbnail(c, url, 320)
            assert r.status_code == 422, (what, r.text)
            detail = r.json()["detail"]
            assert (
                detail.startswith("No thumbnail of ")
                and "not one of Civitai's image hosts (https://image.civitai.com" in detail
            ), (what, detail)
        malformed = thumbnail(c, "http://[::1/a.png", 320)
        assert malformed.status_code == 422 and "is not a URL" in malformed.json()["detail"]
        assert civitai.requests_to("cdn") == []  # never asked, not even once
        assert len(civitai.requests_to("api", "/redirect")) == 1  # the allowed host was asked

        # What Civitai's host answers that is no image: 404, a web page, a bomb, too big.
        missing = thumbnail(c, photo(civitai, 1, "1.bmp"), 320)
        assert missing.status_code == 404, missing.text
        assert "answered 404 Not Found" in missing.json()["detail"]
        civitai.fault("img", html=True)
        page = thumbnail(c, photo(civitai, 2, "2.png"), 320)
        assert page.status_code == 502 and "not an image Pillow can read" in page.json()["detail"]
        civitai.fault("img", status=200, body=png_claiming(20_000, 20_000))
        bomb = thumbnail(c, photo(civitai, 3, "3.png"), 320)
        assert bomb.status_code == 502 and "decompression bomb" in bomb.json()["detail"]
        civitai.fault("img", status=200, body=b"\0" * (MAX_SOURCE + 1))
        big = thumbnail(c, photo(civitai, 4, "4.png"), 320)
        assert big.status_code == 502 and "the image is over 25 MiB" in big.json()["detail"]
        # A refusal is not cached: the same URL, answered well now, is served.
        assert decoded(thumbnail(c, photo(civitai, 2, "2.png"), 320)).size == (8, 6)
    assert sorted(cached_files(home)) == [f"{cache_key(photo(civitai, 2, '2.png'), 320)}.webp"]


def test_requests_for_one_thumbnail_at_once_fetch_it_once_and_at_most_four_are_fetched_at_once(
    civitai, daemon
):
    d = daemon(log_level="DEBUG")
    log = d.home / "logs" / "download.log"
    civitai.image_size = PHOTO
    same = photo(civitai, 1, "1.webp")
    others = [photo(civitai, n, f"{n}.png") for n in range(2, 8)]
    answers: dict[str, list[httpx.Response]] = {url: [] for url in [same, *others]}
    civitai.images_open.clear()  # the image host holds its answers until released
    images = f"/{IMAGE_KEY}/"
    with d.client() as c:
        asking = [
            threading.Thread(target=lambda u=url: answers[u].append(thumbnail(c, u, 320)))
            for url in [same] * 6 + others
        ]
        try:
            for t in asking:
                t.start()
            wait_for(lambda: len(civitai.requests_to("api", images)) >= 4, what="four fetches")
            # Seven thumbnails asked for: four are being fetched, the other three wait their turn
            # (the daemon says so); only then is the count of fetches final while held.
            wait_for(lambda: log.read_text().count(" waits: 4 are being made") == 3, 20)
            held = [r.path for r in civitai.requests_to("api", images)]
        finally:
            civitai.images_open.set()
            for t in asking:
                t.join(30)
    assert len(held) == 4, held
    assert [r.status_code for r in answers[same]] == [200] * 6
    assert len({r.content for r in answers[same]}) == 1
    assert all([r.status_code for r in answers[url]] == [200] for url in others)
    same_path = f"{images}00000000-0000-4000-8000-000000000001/"
    assert len(civitai.requests_to("api", same_path)) == 1
    assert len(civitai.requests_to("api", images)) == 7  # each image once


def test_the_cache_stays_under_its_cap_dropping_the_least_recently_used_first(
    civitai, daemon, home
):
    # Every thumbnail here is the same red 1200x900 PNG shrunk to 320: `size` bytes each.
    civitai.image_size = PHOTO
    size = len(render(image_bytes("png", RED, PHOTO), 320))
    d = daemon(thumbnail_cache_bytes=3 * size + size // 2)  # room for three
    urls = {name: photo(civitai, n, f"{name}.png") for n, name in enumerate("abcd", start=1)}
    files = {name: f"{cache_key(url, 320)}.webp" for name, url in urls.items()}
    with d.client() as c:
        for name in "abc":
            assert decoded(thumbnail(c, urls[name], 320)).width == 320
        assert sorted(cached_files(home)) == sorted(files[n] for n in "abc")
        assert decoded(thumbnail(c, urls["a"], 320)).width == 320  # a hit: `a` used last
        assert decoded(thumbnail(c, urls["d"], 320)).width == 320  # over the cap: `b` goes
        left = cached_files(home)
        assert sorted(left) == sorted(files[n] for n in "acd"), left
        assert sum(left.values()) <= 3 * size + size // 2
        before = len(civitai.requests_to("api", f"/{IMAGE_KEY}/"))
        assert decoded(thumbnail(c, urls["b"], 320)).width == 320  # fetched again
        assert len(civitai.requests_to("api", f"/{IMAGE_KEY}/")) == before + 1


def test_look_alike_hosts_userinfo_other_ports_and_double_redirects_are_refused_unfetched(
    civitai, daemon
):
    # The fake's CDN stands for a page inside the network; its host and port are on record.
    inside = f"{civitai.cdn_url}/{IMAGE_KEY}/00000000-0000-4000-8000-000000000000/width=450/a.png"
    api_port = urlsplit(civitai.base_url).port
    cdn = urlsplit(civitai.cdn_url).netloc
    path = "/00000000-0000-4000-8000-000000000001/width=450/1.png"
    refused = [
        f"https://image.civitai.com@{cdn}{path}",  # userinfo: the host is the one after @
        f"http://image.civitai.com@{cdn}{path}",
        f"https://image.civitai.com:443@{cdn}{path}",
        f"https://image.civitai.com.{cdn}{path}",
        f"https://image.civitai.com.evil.com{path}",
        f"https://evil.com#@image.civitai.com{path}",
        f"https://evil.com\\@image.civitai.com{path}",
        f"https://іmage.civitai.com{path}",  # a Cyrillic і
        f"https://xn--mage-y0d.civitai.com{path}",  # its punycode
        f"https://image.civitai.com\u3002evil.com{path}",  # an ideographic full stop
        f"https://image%2Ecivitai.com{path}",
        f"https://image.civitai.com:8443{path}",  # Civitai's host, but another port
        f"https://image.civitai.com:0{path}",
        f"https://IMAGE.CIVITAI.COM:22{path}",
        f"http://[::1]:{api_port}{path}",  # the configured host's port, another address
        f"http://[::ffff:127.0.0.1]:{api_port}{path}",
        f"http://2130706433:{api_port}{path}",  # 127.0.0.1 as one number
        f"http://localhost:{api_port}{path}",
        f"{civitai.base_url}/redirect?to="  # a redirect to a redirect to another host
        + quote(f"{civitai.base_url}/redirect?to={quote(inside, safe='')}", safe=""),
        f"{civitai.base_url}/redirect?to=" + quote(f"https://image.civitai.com@{cdn}/", safe=""),
    ]
    d = daemon()
    with d.client() as c:
        for url in refused:
            r = thumbnail(c, url, 320)
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert "not one of Civitai's image hosts" in r.json()["detail"], (url, r.text)
        # Widths that are not whole numbers from 1: 422 in the one error shape, none fetched.
        allowed = photo(civitai, 1, "1.png")
        for width in ("0", "-1", "NaN", "1e3", "", "100001", "9" * 40):
            r = c.get("/api/civitai/image", params={"url": allowed, "width": width})
            assert r.status_code == 422 and isinstance(r.json()["detail"], str), (width, r.text)
            assert "width" in r.json()["detail"], (width, r.text)
    assert civitai.requests_to("cdn") == []
    assert civitai.requests_to("api", f"/{IMAGE_KEY}/") == []
    assert len(civitai.requests_to("api", "/redirect")) == 3  # the two hops, and the last one


def test_a_link_planted_at_data_thumbnails_is_neither_read_nor_written_through(
    civitai, daemon, home, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = photo(civitai, 1, "1.png")
    planted = elsewhere / f"{cache_key(url, 320)}.webp"
    planted.write_bytes(b"a file outside data/, not a thumbnail")
    os.utime(planted, (1_000_000, 1_000_000))
    (home / "data").mkdir(exist_ok=True)
    (home / "data" / "thumbnails").symlink_to(elsewhere, target_is_directory=True)
    d = daemon()
    with d.client() as c:
        for other in (url, photo(civitai, 2, "2.png")):
            served = thumbnail(c, other, 320)
            assert decoded(served).size == (8, 6)  # made afresh from Civitai's image
    assert os.readlink(home / "data" / "thumbnails") == str(elsewhere)  # the link left as it is
    assert sorted(p.name for p in elsewhere.iterdir()) == [planted.name]  # nothing written there
    assert planted.read_bytes() == b"a file outside data/, not a thumbnail"
    assert planted.stat().st_mtime == 1_000_000  # not even touched
    assert len(civitai.requests_to("api", f"/{IMAGE_KEY}/")) == 2


def test_two_daemons_on_two_civitais_answer_each_their_own_searches_and_thumbnails(
    civitai, daemon, daemon_factory, tmp_path
):
    civitai.image_size = PHOTO
    civitai.add_simple(1, 10, b"first", type="LORA")
    first = daemon()
    with FakeCivitai() as other:
        other.image_size = (8, 6)
        other.add_simple(2, 20, b"second", type="LORA")
        home2 = tmp_path / "home2"
        write_config(home2, civitai_base_url=other.base_url, retries=5, timeout=10)
        second = daemon_factory(home2).start()
        # The same image path, on each one's Civitai: each daemon's own size, in its own cache.
        path = f"/{IMAGE_KEY}/00000000-0000-4000-8000-000000000001/width=450/1.png"
        with first.client() as a, second.client() as b:
            assert [m["id"] for m in a.get("/api/civitai/models").json()["items"]] == [1]
            assert [m["id"] for m in b.get("/api/civitai/models").json()["items"]] == [2]
            for _ in range(2):  # the second time from each one's cache
                assert decoded(thumbnail(a, civitai.base_url + path, 320)).size == (320, 240)
                assert decoded(thumbnail(b, other.base_url + path, 320)).size == (8, 6)
            refused = thumbnail(b, civitai.base_url + path, 320)  # not its Civitai
            assert refused.status_code == 422, refused.text
        assert len(other.requests_to("api", f"/{IMAGE_KEY}/")) == 1
        second.stop()
    assert len(civitai.requests_to("api", f"/{IMAGE_KEY}/")) == 1
    assert len(list((tmp_path / "home2" / "data" / "thumbnails").glob("*.webp"))) == 1


def test_the_image_proxy_never_reaches_civitais_api_nor_carries_the_civitai_token(civitai, daemon):
    token = "civitai-token-never-sent-to-images"
    civitai.add_simple(1, 2041, b"weights")
    d = daemon(viewer_token=VIEWER, civitai_token=token)
    base = civitai.base_url
    api_paths = [
        f"{base}/api/download/models/2041",  # the request: a download with the token
        f"{base}/api/v1/models/1",
        f"{base}/API/download/models/2041",
        f"{base}/%61pi/download/models/2041",
        f"{base}/{IMAGE_KEY}/../api/download/models/2041",
        f"{base}//api/download/models/2041",
        f"{base}/api",
    ]
    viewer = httpx.Client(
        base_url=d.base_url, headers={"Authorization": f"Bearer {VIEWER}"}, timeout=20
    )
    with viewer:
        for url in api_paths:
            r = thumbnail(viewer, url, 320)
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert "not an image" in r.json()["detail"], (url, r.text)
        # An image path that redirects to the API: the hop is refused, not followed.
        civitai.fault("img", status=302, location=f"{base}/api/download/models/2041")
        r = thumbnail(viewer, photo(civitai, 1, "1.png"), 320)
        assert r.status_code == 422 and "not an image" in r.json()["detail"], r.text
        assert [r.path for r in civitai.requests if "/api/" in r.path.lower()] == []
        assert civitai.requests_to("download") == [] and civitai.requests_to("cdn") == []

        # A thumbnail asked as it should be reaches the image host, without the token.
        assert decoded(thumbnail(viewer, photo(civitai, 2, "2.png"), 320)).size == (8, 6)
    asked = civitai.requests_to("api", f"/{IMAGE_KEY}/")
    assert len(asked) == 2, [r.path for r in asked]  # the redirecting one and this one
    for request in asked:
        assert "authorization" not in request.headers, request.headers
        assert token not in " ".join(request.headers.values())
