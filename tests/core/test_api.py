"""The lazy top-level API: every advertised name resolves, unknown names fail clearly."""

from __future__ import annotations

import pytest

import splitinfer


@pytest.mark.parametrize("name", sorted(splitinfer._API))
def test_every_public_name_resolves(name):
    obj = getattr(splitinfer, name)
    assert callable(obj), name
    assert name in dir(splitinfer)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        splitinfer.nope  # noqa: B018


def test_core_import_pulls_no_heavy_optional_packages():
    import subprocess
    import sys

    code = ("import sys, splitinfer, splitinfer.cli; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'ray', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
