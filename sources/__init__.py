"""Where a model comes from, besides Civitai itself (civitai.py): one module per source
(Hugging Face files, ComfyUI workflows, Civitai AIR ids, a Civitai creator's models)."""
