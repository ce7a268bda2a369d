"""Where a model comes from, besides Civitai itself (civitai.py): one module per source."""
