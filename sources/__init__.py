"""Where a model comes from: Civitai AIR ids, a Civitai creator's models, other hosts."""
