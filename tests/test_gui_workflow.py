"""The Workflow tab in a real browser: a real ComfyUI template picked and another dropped, the
table of its models, a pasted URL for a model with no source queued and fetched. The page is
watched for console errors, page errors and CSP violations: there must be none."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import wait_job
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_library import _page

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"

DROP = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, { type: "application/json" }));
  const zone = document.getElementById("workflow-drop");
  const init = { dataTransfer: data, bubbles: true, cancelable: true };
  zone.dispatchEvent(new DragEvent("dragover", init));
  zone.dispatchEvent(new DragEvent("drop", init));
}"""


def test_a_picked_and_a_dropped_workflow_show_their_models_and_a_pasted_url_is_fetched(
    civitai,
    hf,
    daemon,
    home,
    browser,
):
    data = os.urandom(40_000)
    f = civitai.add_simple(1, 10, data, filename="upstream.safetensors")
    # The Hub is the fake (without these files): a preview asks it for sizes, never the internet.
    d = daemon(
        layout="comfyui", allowed_hosts=["huggingface.co", "127.0.0.2"], hf_base_url=hf.base_url
    )
    models = Path(os.path.realpath(home / "data" / "models"))
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "workflow")

    page.set_input_files("#workflow-file", str(FIXTURES / "01_get_started_text_to_image.json"))
    rows = page.locator("#workflow-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("td:nth-child(3)")).to_have_text(
        ["text_encoders", "vae", "diffusion_models"]
    )
    expect(rows.locator(".badge")).to_have_text(["to queue"] * 3)
    expect(rows.first).to_contain_text("CLIPLoader #30 (in Z-Image-Turbo Text to Image)")
    expect(page.locator("#workflow-summary")).to_have_text("3 models: 3 to queue.")
    expect(page.locator("#workflow-download")).to_have_text("Download 3 models")  # sizes unknown
    box = page.locator("#workflow-table").bounding_box()
    assert box and box["width"] > 600 and box["height"] > 60, box
    shot(page, "workflow-preview")

    page.evaluate(DROP, ["api.json", (FIXTURES / "api_basic_example.json").read_text()])
    expect(rows).to_have_count(1)
    expect(rows.locator(".badge")).to_have_text(["no source"])
    expect(rows.first).to_contain_text("CheckpointLoaderSimple #4")
    paste = rows.first.locator(".workflow-paste input")
    expect(paste).to_be_visible()
    paste.fill(civitai.signed_url(f))
    rows.first.locator(".workflow-paste button").click()
    target = models / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
    expect(rows.first).to_contain_text(f"→ {target}")
    shot(page, "workflow-pasted")
    with d.client() as c:
        [job] = c.get("/api/jobs").json()["jobs"]
        done = wait_job(c, job["id"])
    assert done["path"] == str(target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    w.assert_clean()
    w.page.context.close()
    d.stop()


def test_a_url_pasted_for_a_subfolder_model_keeps_its_subfolder_and_hash_and_a_bad_one_is_refused(
    civitai,
    daemon,
    home,
    browser,
):
    data = os.urandom(30_000)
    digest = hashlib.sha256(data).hexdigest()
    f = civitai.add_simple(1, 10, data, filename="upstream.safetensors")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"])
    models = Path(os.path.realpath(home / "data" / "models"))
    name = "SD1.5/pasted.safetensors"
    node = {
        "id": 9,
        "type": "LoraLoader",
        "properties": {
            "models": [{"name": name, "directory": "loras", "hash": digest, "hash_type": "SHA256"}]
        },
        "widgets_values": [name, 1, 1],
    }
    many = [
        {"id": 100 + i, "type": "LoraLoader", "widgets_values": [f"SDXL/lora-{i:03}.safetensors"]}
        for i in range(199)
    ]
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "workflow")
    page.evaluate(DROP, ["wf.json", json.dumps({"nodes": [node, *many]})])
    rows = page.locator("#workflow-table tbody tr")
    expect(rows).to_have_count(200)
    expect(page.locator("#workflow-summary")).to_have_text("200 models: 200 no source.")
    page.set_viewport_size({"width": 390, "height": 844})
    scroll = "n => [n.scrollWidth, n.clientWidth]"
    wide, shown = page.locator("html").evaluate(scroll)
    assert wide <= shown, f"the page scrolls sideways at 390 px: {wide} > {shown}"
    row = rows.first
    paste = row.locator(".workflow-paste input")
    paste.fill("file:///etc/passwd")
    row.locator(".workflow-paste button").click()
    expect(page.locator("#toasts")).to_contain_text("http:// or https:// URL")
    expect(paste).to_be_visible()
    paste.fill(civitai.signed_url(f))
    row.locator(".workflow-paste button").click()
    target = models / "loras" / "SD1.5" / "pasted.safetensors"
    expect(row).to_contain_text(f"→ {target}")
    shot(page, "workflow-pasted-subfolder-390px")
    with d.client() as c:
        [job] = c.get("/api/jobs").json()["jobs"]
        assert job["sha256"] == digest
        done = wait_job(c, job["id"])
    assert done["path"] == str(target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    w.assert_clean()
    page.context.close()
    d.stop()
