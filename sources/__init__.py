"""Where a model comes from: Civitai (its client, versions, Browse search and thumbnails), the
Hugging Face Hub, AIRs, a creator's models in bulk, and ComfyUI workflows: which bytes, which
hash, which token for which host.

Must not import: web, daemon, main, updater, notify, fastapi, starlette, uvicorn
"""
