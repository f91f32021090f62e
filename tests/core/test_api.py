"""The lazy top-level API: every advertised name resolves, unknown names fail clearly."""

from __future__ import annotations

from importlib import import_module

import pytest

import splitinfer


@pytest.mark.parametrize("name", sorted(splitinfer._API))
def test_every_public_name_resolves(name):
    """``splitinfer.<name>`` is the object of that name in the module ``_API`` says defines it."""
    module = splitinfer._API[name]
    obj = getattr(splitinfer, name)
    assert callable(obj), name
    assert obj.__name__ == name
    assert obj.__module__ == module or obj.__module__.startswith(module + "."), obj.__module__
    assert obj is getattr(import_module(module), name)


def test_dir_lists_the_lazy_names():
    """The lazily resolved names are not module globals, yet tab completion (``dir``) shows them."""
    assert set(splitinfer._API) <= set(dir(splitinfer))
    assert "__version__" in dir(splitinfer)


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
