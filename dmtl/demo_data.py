"""The demo database on first use: generate the procedural faces, then align them into shards (cached)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("DMTL_CACHE", Path.home() / ".cache" / "dmtl"))


def ensure_demo_data(options: dict, image_size: int, cache_dir=None) -> Path:
    """Returns a shard folder of the demo database with these generator options, building it if absent.

    The folder name hashes the options, so different sizes never mix; an interrupted build resumes.
    """
    from dmtl.databases import demo, load_database
    from dmtl.preprocessing import build

    cache = Path(cache_dir or DEFAULT_CACHE)
    key = hashlib.sha1(json.dumps({**options, "size": image_size}, sort_keys=True).encode()).hexdigest()[:10]
    raw, data = cache / f"demo-raw-{key}", cache / f"demo-data-{key}"
    if (data / "dataset.json").is_file():
        return data
    demo.ensure(raw, **options)
    build(load_database("demo", raw), data, detector="none", size=image_size, workers=0)
    return data
