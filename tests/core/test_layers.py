"""The layering in ARCHITECTURE.md holds, and the import-linter contracts that enforce it can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
pytestmark = pytest.mark.skipif(not Path(LINT).exists(), reason="import-linter is not installed")


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT, str(REPO / "pyproject.toml"), "--no-cache"], cwd=src,
                          env=env, capture_output=True, text=True, timeout=120)


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "src" / "splitinfer", tmp_path / "splitinfer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_contracts():
    result = _lint(REPO / "src")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("graph/model.py", "import splitinfer.runtime  # upward", "Layers: each package imports"),
    ("runtime/device/worker.py", "import splitinfer.runtime.coordinator.session  # upward", "Runtime rooms"),
    ("plan/solve.py", "import onnx  # the planner must stay pure", "The planner is pure"),
    ("runtime/wire/codec.py", "import onnxruntime  # the wire knows no ONNX", "The wire knows no ONNX"),
    ("runtime/coordinator/_requests.py", "import splitinfer.runtime.coordinator.session  # a cycle",
     "No import cycles"),
    ("compression/_base.py", "import zmq  # compression is plain numpy", "Data sets, quality metrics"),
    ("compression/_base.py", "import splitinfer.cluster  # a sibling on its layer", "Layers: each package"),
])
def test_an_import_against_the_layering_breaks_a_contract(tmp_path, module, line, contract):
    src = _copy_package(tmp_path)
    _append(src / "splitinfer" / module, line)
    result = _lint(src)
    assert result.returncode != 0
    assert "Broken contracts" in result.stdout
    assert contract in result.stdout.split("Broken contracts", 1)[1]
