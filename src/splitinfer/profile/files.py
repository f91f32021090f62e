"""Reading, writing and merging ``profile.json`` (the format: :mod:`splitinfer.profile.schema`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from splitinfer.errors import ProfileError, SchemaError, read_file
from splitinfer.profile.schema import PROFILE_SCHEMA, Profile, TradeoffProfile
from splitinfer.profile.validation import validate_profile


def _rename_old_keys(raw: dict) -> None:
    """Profiles written before ``num_threads`` name a device's threads ``threads``: read them as such."""
    devices = raw.get("devices")
    for device in devices.values() if isinstance(devices, dict) else ():
        if isinstance(device, dict) and "threads" in device and "num_threads" not in device:
            device["num_threads"] = device.pop("threads")


def decode_profile(data: bytes | str, where: str = "profile") -> Profile:
    """Parse and validate profile JSON text."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise SchemaError(f"{where} is not valid JSON: {e}", "write it with `splitinfer profile`") from None
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} is not a JSON object", "write it with `splitinfer profile`")
    if raw.get("schema", PROFILE_SCHEMA) != PROFILE_SCHEMA:
        raise SchemaError(
            f"{where} has schema {raw.get('schema')!r}, this splitinfer reads {PROFILE_SCHEMA}",
            "re-profile with this version of splitinfer",
        )
    _rename_old_keys(raw)
    try:
        profile = msgspec.convert(raw, Profile)
    except msgspec.ValidationError as e:
        raise SchemaError(
            f"{where} is malformed: {e}", "fix that field (see the format in splitinfer.profile.schema)"
        ) from None
    return validate_profile(profile)


def encode_profile(profile: Profile) -> bytes:
    """Profile JSON text (indented), after validation."""
    validate_profile(profile)
    return msgspec.json.format(msgspec.json.encode(profile), indent=2) + b"\n"


def load_profile(path: str | Path) -> Profile:
    """Read and validate ``profile.json``."""
    data = read_file(path, "profile", "check the path (write one with `splitinfer profile`)", ProfileError)
    return decode_profile(data, str(path))


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` to ``path`` as JSON."""
    Path(path).write_bytes(encode_profile(profile))


def _newer(a: str, b: str) -> bool:
    """Is run date ``a`` strictly newer than ``b``? Unreadable or missing dates are oldest."""

    def parse(text: str) -> datetime | None:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.now().astimezone().tzinfo)

    ta, tb = parse(a), parse(b)
    if ta is None:
        return False
    return tb is None or ta > tb


def merge_profiles(a: Profile, b: Profile) -> Profile:
    """One profile with the devices and links of both; on a conflict the newer run wins (b on a tie)."""
    validate_profile(a)
    validate_profile(b)
    if a.model.sha256 != b.model.sha256:
        raise ProfileError(
            f"cannot merge profiles of different models ({a.model.name} {a.model.sha256[:12]} "
            f"and {b.model.name} {b.model.sha256[:12]})",
            "merge profiles of the same model file",
        )
    if len(a.blocks) != len(b.blocks) or [x.cut_bytes for x in a.blocks] != [x.cut_bytes for x in b.blocks]:
        raise ProfileError(
            "the profiles split the model into different blocks",
            "profile both with the same cuts (the same splitinfer version and options)",
        )
    devices = dict(a.devices)
    for name, dev in b.devices.items():
        if name not in devices or not _newer(devices[name].date, dev.date):
            devices[name] = dev
    links = {(x.src, x.dst): x for x in a.links}
    for link in b.links:
        key = (link.src, link.dst)
        if key not in links or not _newer(links[key].date, link.date):
            links[key] = link
    overhead = b.hop_overhead_s or a.hop_overhead_s
    return validate_profile(msgspec.structs.replace(b, devices=devices, links=tuple(links.values()),
                                                    hop_overhead_s=overhead,
                                                    tradeoffs=_merge_tradeoffs(a.tradeoffs, b.tradeoffs)))


def _merge_tradeoffs(a: TradeoffProfile | None, b: TradeoffProfile | None) -> TradeoffProfile | None:
    """b's quality costs (the later measurement); the device timings of both, b's on a conflict."""
    if a is None or b is None:
        return b or a
    rep = msgspec.structs.replace
    precisions = {n: rep(p, devices={**a.precisions[n].devices, **p.devices}) if n in a.precisions else p
                  for n, p in b.precisions.items()}
    compressions = {n: rep(c, devices={**a.compressions[n].devices, **c.devices})
                    if n in a.compressions else c for n, c in b.compressions.items()}
    return rep(b, precisions={**a.precisions, **precisions}, compressions={**a.compressions, **compressions})
