"""``splitinfer keygen``: CurveZMQ key pairs for the coordinator and the workers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from splitinfer.cli._common import check_folder, console
from splitinfer.errors import SplitinferError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def keygen_command(
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Folder for the key files (made if missing).")],
    names: Annotated[list[str] | None, typer.Option(
        "--name", help="A key pair to write (repeatable); default: coordinator, plus one per device with "
                       "--cluster.")] = None,
    cluster: Annotated[Path | None, typer.Option(
        "--cluster", help="cluster.yaml: also write a pair for each of its devices.")] = None,
) -> None:
    """Write CurveZMQ key pairs: NAME.key (public: share it) and NAME.key_secret (keep it on its machine).

    With `curve: {keys: DIR}` in cluster.yaml, every connection between the coordinator and the workers
    is encrypted and both ends are authenticated. Typical use:

      splitinfer keygen -o keys --cluster cluster.yaml

    writes keys/coordinator.key(_secret) and keys/NAME.key(_secret) per device. Local workers are started
    with their keys; on a remote machine copy NAME.key_secret, coordinator.key and the other devices'
    .key files, then run: splitinfer worker --name NAME --curve-secret-key NAME.key_secret
    --curve-coordinator-keys coordinator.key --curve-peer-keys PEERS_DIR ...
    """
    from splitinfer.runtime.wire.curve import write_key_pair

    check_folder(output, "-o")
    wanted = list(names or [])
    if cluster is not None:
        from splitinfer.cluster import load_cluster

        found = load_cluster(cluster)
        wanted += [d.name for d in found.devices]
    if not names:
        wanted.insert(0, "coordinator")
    for name in wanted:
        if not _NAME.fullmatch(name):
            raise SplitinferError(f"key name {name!r} is not a plain name",
                                  "use letters, digits, '_', '-' and '.', at most 64 characters")
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if repeated:
        raise SplitinferError(f"key names repeat: {', '.join(repeated)}", "name each key pair once")
    existing = [output / f"{n}{suffix}" for n in wanted for suffix in (".key", ".key_secret")
                if (output / f"{n}{suffix}").exists()]
    if existing:  # checked for all before any is written: nothing half done
        raise SplitinferError(f"{existing[0]} exists", "choose another folder, or delete the old pair "
                              "(every peer that trusts it must then get the new public key)")
    for name in wanted:
        public, secret = write_key_pair(output, name)
        console.print(f"wrote {public} and {secret}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("keygen", no_args_is_help=True)(keygen_command)
