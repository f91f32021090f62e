"""``splitinfer keygen``: CurveZMQ key pairs for the coordinator and each device, never overwritten."""

from __future__ import annotations

import stat

import pytest
import yaml
from helpers.cli import one_error_line, run_cli

from splitinfer.runtime.wire.curve import read_key_pair, read_public_keys


def _pairs(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_keygen_writes_the_coordinator_pair_by_default(tmp_path, capsys):
    folder = tmp_path / "new" / "keys"  # made if missing
    code, out, _ = run_cli(capsys, "keygen", "-o", folder)
    assert code == 0
    assert _pairs(folder) == {"coordinator.key", "coordinator.key_secret"}
    said = "".join(out.split())  # rich wraps long paths anywhere
    assert f"wrote{folder / 'coordinator.key'}and{folder / 'coordinator.key_secret'}" in said
    pair = read_key_pair(folder / "coordinator.key_secret")
    assert read_public_keys(folder / "coordinator.key") == {pair.public}
    assert stat.S_IMODE((folder / "coordinator.key_secret").stat().st_mode) == 0o600


def test_keygen_with_a_cluster_adds_one_pair_per_device(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"devices": [{"name": "camera"}, {"name": "edge"}, {"name": "cloud"}],
                                       "links": []}))
    code, _, _ = run_cli(capsys, "keygen", "-o", tmp_path / "keys", "--cluster", cluster)
    assert code == 0
    names = ("coordinator", "camera", "edge", "cloud")
    assert _pairs(tmp_path / "keys") == {f"{n}{s}" for n in names for s in (".key", ".key_secret")}
    publics = {read_key_pair(tmp_path / "keys" / f"{n}.key_secret").public for n in names}
    assert len(publics) == 4  # four different pairs
    # ... which is what `curve: {keys: DIR}` in that cluster reads
    assert read_public_keys(tmp_path / "keys") == publics


def test_keygen_with_names_writes_only_those(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "keygen", "-o", tmp_path, "--name", "edge", "--name", "cloud.eu-1")
    assert code == 0
    assert _pairs(tmp_path) == {"edge.key", "edge.key_secret", "cloud.eu-1.key", "cloud.eu-1.key_secret"}


def test_existing_key_files_are_refused_and_nothing_is_written(tmp_path, capsys):
    assert run_cli(capsys, "keygen", "-o", tmp_path, "--name", "edge")[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path, "--name", "a", "--name", "edge", "--name", "z")
    assert code == 2
    line = one_error_line(err)
    assert "edge.key exists" in line and "delete the old pair" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # neither a nor z was written
    (tmp_path / "edge.key").unlink()  # only the secret left: still refused
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path, "--name", "edge")
    assert code == 2 and "edge.key_secret exists" in one_error_line(err)
    assert _pairs(tmp_path) == {"edge.key_secret"}


@pytest.mark.parametrize("names", [["../escape"], ["a/b"], [".hidden"], [""], ["x" * 65], ["ok", "bad name"]])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path, capsys, names):
    args = [a for n in names for a in ("--name", n)]
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path / "keys", *args)
    assert code == 2
    assert "is not a plain name" in one_error_line(err)
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").iterdir())
    assert not (tmp_path / "escape.key").exists()


def test_repeated_names_a_bad_cluster_or_a_file_as_folder_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path / "k", "--name", "a", "--name", "a")
    assert code == 2 and "key names repeat: a" in one_error_line(err)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"devices": [{"name": "coordinator"}], "links": []}))
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path / "k", "--cluster", cluster)
    assert code == 2 and "coordinator" in one_error_line(err)  # a device may not take the coordinator's name
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path / "k", "--cluster", tmp_path / "missing.yaml")
    assert code == 2 and "missing.yaml" in one_error_line(err)
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "keygen", "-o", tmp_path / "file")
    assert code == 2 and "is a file, not a folder" in one_error_line(err)
    assert not (tmp_path / "k").exists()
