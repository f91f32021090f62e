"""Every test here converts into a cache folder of its own (``convert_cache``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def convert_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPLITINFER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
