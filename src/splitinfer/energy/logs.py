"""Readers of recorded power logs, each into a :class:`~splitinfer.energy.trace.PowerTrace`.

- :func:`read_smartpower3`: an ODROID SmartPower3's serial log, as the meter prints it (Hardkernel's
  format: 17 comma-separated fields per line) or as DIME's host logger saves it (the same 17 columns
  under a header, then ``timestamp``: the host's ``time.time_ns()`` when the line arrived).
- :func:`read_power_csv`: a CSV with a header, ``time,watts`` or ``time,volts,amps``.
- :func:`read_tegrastats`: an NVIDIA Jetson's ``tegrastats`` output, the board's input rail.

Every reader is bounded (``_files.log_lines``), runs nothing, and raises ProfileError naming the file
and line of the first malformed input.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from pathlib import Path

from splitinfer.energy._files import MAX_LOG_BYTES, log_lines, number_at
from splitinfer.energy.trace import PowerTrace
from splitinfer.errors import ProfileError
from splitinfer.units import check_number

# ---- SmartPower3 ---------------------------------------------------------------------------------
# The meter's line: ms since boot; input mV, mA, mW, on/off; per channel 0 and 1: mV, mA, mW, on/off,
# interrupts; then two checksums in hex of the bytes before them (8-bit two's complement of the sum,
# and the XOR), e.g. "0000815169,15296,0036,00550,0,00000,0000,00000,0,00,00000,0000,00000,0,00,14,12".
_SP3_FIELDS = 17
_SP3_POWER = {"input": 3, 0: 7, 1: 12}  # the mW field of each channel
_SP3_POWER_NAMES = {"input": ("input power (mw)", "mw_in"), 0: ("channel 0 power (mw)", "mw_0"),
                    1: ("channel 1 power (mw)", "mw_1")}
_SP3_TIME_NAMES = ("time (ms)", "ms")  # DIME's header; osp3-tools' header
_SP3_PRINTED_LEN = 74  # the 15 fields and commas before the checksums, as the meter prints them


def _checksums(body: str) -> tuple[int, int]:
    data = body.encode("ascii", "replace")
    xor = 0
    for byte in data:
        xor ^= byte
    return (-sum(data)) & 0xFF, xor


def read_smartpower3(path: str | Path, *, channel: str | int = "input", clock: str = "auto",
                     skip_damaged: bool = False, max_bytes: int = MAX_LOG_BYTES) -> PowerTrace:
    """The power of one ``channel`` (``"input"``: all the meter delivers, or output ``0`` or ``1``)
    of a SmartPower3 log.

    ``clock``: ``"host"``, the ``timestamp`` column DIME's logger adds (nanoseconds of the host's
    wall clock, the clock its profiler timed runs with); ``"meter"``, the meter's milliseconds since
    boot; ``"auto"``, host when the column is there. A line whose checksums fail (a damaged serial
    line) is an error unless ``skip_damaged``; checksums are checked where the fields are as the
    meter printed them (a spreadsheet that re-saved the file drops their leading zeros).
    """
    if channel not in _SP3_POWER:
        raise ProfileError(f"channel is {channel!r}", "use 'input', 0 or 1")
    if clock not in ("auto", "host", "meter"):
        raise ProfileError(f"clock is {clock!r}", "use 'auto', 'host' or 'meter'")
    what = "SmartPower3 log"
    header: list[str] | None = None
    stamp_at: int | None = None
    times: list[float] = []
    watts: list[float] = []
    for number, line in log_lines(path, what, max_bytes=max_bytes):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if header is None and not times and not fields[0][:1].isdigit():
            header = [f.strip('"').lower() for f in fields]
            stamp_at = _sp3_header(header, channel, where)
            continue
        width = len(header) if header is not None else _SP3_FIELDS
        if len(fields) != width:
            raise ProfileError(f"{where}: {len(fields)} fields where a {what} line has {width}",
                               "remove the cut or damaged line")
        body = ",".join(fields[:15]) + ","
        if len(body) == _SP3_PRINTED_LEN:
            expected = _checksums(body)
            try:
                found = (int(fields[15], 16), int(fields[16], 16))
            except ValueError:
                found = None
            if found != expected:
                if skip_damaged:
                    continue
                raise ProfileError(f"{where}: the checksums {fields[15]},{fields[16]} do not match the line "
                                   f"({expected[0]:02x},{expected[1]:02x}): a damaged serial line",
                                   "remove the line, or pass skip_damaged=True")
        use_host = stamp_at is not None and clock != "meter"
        if use_host:
            times.append(number_at(fields[stamp_at], where, "timestamp (ns)", low=0) / 1e9)
        else:
            times.append(number_at(fields[0], where, "time (ms)", low=0) / 1e3)
        watts.append(number_at(fields[_SP3_POWER[channel]], where, f"channel {channel} power (mW)",
                               low=0) / 1e3)
    if clock == "host" and stamp_at is None:
        raise ProfileError(f"{what} {path} has no timestamp column (the host's clock)",
                           "use clock='meter', or log with DIME's logger, which adds it")
    if not times:
        raise ProfileError(f"{what} {path} has no samples", "give the log the meter wrote while it ran")
    clock_name = "host clock" if stamp_at is not None and clock != "meter" else "meter clock"
    return PowerTrace.of(times, watts, f"{path} (SmartPower3 {channel} power, {clock_name})")


def _sp3_header(header: list[str], channel: str | int, where: str) -> int | None:
    """Checks a SmartPower3 header: the meter's 17 columns first; the timestamp column's index."""
    if len(header) < _SP3_FIELDS or header[0] not in _SP3_TIME_NAMES \
            or header[_SP3_POWER[channel]] not in _SP3_POWER_NAMES[channel]:
        raise ProfileError(f"{where}: the header is not a SmartPower3 log's (it starts "
                           f"{','.join(header[:4])!r})",
                           "give the CSV DIME's logger wrote (time (ms), input voltage (mV), ...) or the "
                           "meter's lines; for other meters use read_power_csv")
    return header.index("timestamp") if "timestamp" in header[_SP3_FIELDS:] else None


# ---- generic CSV ---------------------------------------------------------------------------------
_CSV_NAMES = {"time": ("time", "time_s"), "watts": ("watts", "power_w"), "volts": ("volts", "voltage_v"),
              "amps": ("amps", "current_a")}


def _split(line: str, comma: bool) -> list[str]:
    return [f.strip().strip('"') for f in line.split(",")] if comma else line.split()


def read_power_csv(path: str | Path, *, max_bytes: int = MAX_LOG_BYTES) -> PowerTrace:
    """A CSV whose header names ``time`` (or ``time_s``, seconds) and ``watts`` (or ``power_w``), or
    ``volts`` (``voltage_v``) and ``amps`` (``current_a``); comma or whitespace separated, as the
    header is. Blank lines and lines starting with ``#`` are skipped; other columns ignored."""
    what = "power CSV"
    header: list[str] | None = None
    comma = True
    at: dict[str, int] = {}
    times: list[float] = []
    watts: list[float] = []
    for number, line in log_lines(path, what, max_bytes=max_bytes):
        where = f"{path}:{number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if header is None:
            comma = "," in line
            header = [name.lower() for name in _split(line, comma)]
            for role, names in _CSV_NAMES.items():
                found = [i for i, name in enumerate(header) if name in names]
                if len(found) > 1:
                    raise ProfileError(f"{where}: the header names the {role} column twice",
                                       "keep one of " + " or ".join(names))
                if found:
                    at[role] = found[0]
            if "time" not in at or ("watts" not in at and not ("volts" in at and "amps" in at)):
                raise ProfileError(f"{where}: the header {line.strip()[:200]!r} has no time and power "
                                   "columns",
                                   "name them time,watts or time,volts,amps (also time_s, power_w, "
                                   "voltage_v, current_a)")
            continue
        fields = _split(line, comma)
        if len(fields) != len(header):
            raise ProfileError(f"{where}: {len(fields)} fields where the header has {len(header)}",
                               "give every row a value for every column")
        times.append(number_at(fields[at["time"]], where, "time (s)"))
        if "watts" in at:
            watts.append(number_at(fields[at["watts"]], where, "watts", low=0))
        else:
            volts = number_at(fields[at["volts"]], where, "volts")
            amps = number_at(fields[at["amps"]], where, "amps")
            watts.append(check_number(volts * amps, f"{where}: volts x amps", low=0, error=ProfileError,
                                      fix="record the power drawn (volts and amps of one sign)"))
    if header is None:
        raise ProfileError(f"{what} {path} has no header",
                           "start it with a line time,watts or time,volts,amps")
    if not times:
        raise ProfileError(f"{what} {path} has no samples", "give the rows under the header")
    column = "watts" if "watts" in at else "volts x amps"
    return PowerTrace.of(times, watts, f"{path} ({column})")


# ---- tegrastats ----------------------------------------------------------------------------------
_STAMP = re.compile(r"(\d{2})-(\d{2})-(\d{4}) (\d{2}):(\d{2}):(\d{2})\s")
_RAIL = re.compile(r"(?<![A-Za-z0-9_])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![0-9A-Za-z])")
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # Orin, Xavier, TX2 (VDD_IN); Nano (POM_5V_IN)


def read_tegrastats(path: str | Path, *, interval_ms: float = 1000, rail: str | None = None,
                    start_s: float = 0.0, timezone: tzinfo | None = None,
                    max_bytes: int = MAX_LOG_BYTES) -> PowerTrace:
    """The board's input power (``VDD_IN``, or ``POM_5V_IN`` on a Nano; ``rail``: another one, as
    tegrastats names it) from ``tegrastats`` lines: each rail's "now/average" in mW, the now taken.

    Lines stamped ``MM-DD-YYYY HH:MM:SS`` (newer tegrastats) are timed by their stamp, in
    ``timezone`` (None: this machine's local time); the stamps are whole seconds, so lines sharing a
    second are spread ``interval_ms`` apart within it. Unstamped lines are timed ``start_s`` plus
    the line's index times ``interval_ms`` (tegrastats' ``--interval``, 1000 by default).
    """
    check_number(interval_ms, "interval_ms", low=0, low_open=True, error=ProfileError,
                 fix="the --interval tegrastats ran with, in milliseconds")
    check_number(start_s, "start_s", error=ProfileError)
    interval_s = interval_ms / 1e3
    what = "tegrastats log"
    times: list[float] = []
    watts: list[float] = []
    stamped: bool | None = None
    chosen = rail
    last_stamp, same = None, 0
    for number, line in log_lines(path, what, max_bytes=max_bytes):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        rails = {m.group(1): m.group(2) for m in _RAIL.finditer(line)}
        if chosen is None:
            chosen = next((name for name in _INPUT_RAILS if name in rails), None)
        if chosen not in rails:
            found = ", ".join(rails) or "none"
            raise ProfileError(f"{where}: no {chosen or ' or '.join(_INPUT_RAILS)} rail on this line "
                               f"(rails found: {found})",
                               "give tegrastats' output, or pass rail= the rail to read, as tegrastats "
                               "names it")
        stamp = _STAMP.match(line)
        if stamped is None:
            stamped = stamp is not None
        elif stamped != (stamp is not None):
            raise ProfileError(f"{where}: some lines carry a date and time and others do not",
                               "give the output of one tegrastats run")
        if stamp is None:
            times.append(start_s + len(times) * interval_s)
        else:
            second = _epoch(stamp, timezone, where)
            same = same + 1 if second == last_stamp else 0
            last_stamp = second
            if same * interval_s >= 1.5:
                raise ProfileError(f"{where}: {same + 1} lines stamped {stamp.group(0).strip()}, more than "
                                   f"one every {interval_ms:g} ms allows",
                                   "pass interval_ms the --interval tegrastats ran with")
            times.append(second + same * interval_s)
        watts.append(number_at(rails[chosen], where, f"{chosen} (mW)", low=0) / 1e3)
    if not times:
        raise ProfileError(f"{what} {path} has no lines", "give the output tegrastats wrote while it ran")
    timing = "stamped" if stamped else f"every {interval_ms:g} ms from {start_s:g} s"
    return PowerTrace.of(times, watts, f"{path} (tegrastats {chosen}, {timing})")


def _epoch(stamp: re.Match[str], timezone: tzinfo | None, where: str) -> float:
    month, day, year, hour, minute, second = (int(g) for g in stamp.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone)
    except ValueError as e:
        raise ProfileError(f"{where}: the date {stamp.group(0).strip()!r} is not a date: {e}",
                           "give tegrastats' output as it wrote it") from None
    return moment.timestamp()


FORMATS = ("auto", "smartpower3", "csv", "tegrastats")


def _sniff(path: Path) -> str:
    """The log's format from its first line (tegrastats lines name RAM; a SmartPower3's start with the
    meter's zero-padded milliseconds or DIME's 'time (ms)' header)."""
    try:
        with path.open("rb") as handle:
            first = handle.read(4096).decode("utf-8", "replace").lstrip().splitlines()
    except OSError as e:
        raise ProfileError(f"cannot read {path}: {e.strerror or e}", "give the power log's path") from None
    line = first[0] if first else ""
    if line.startswith("RAM ") or " RAM " in line[:40]:
        return "tegrastats"
    if line.lower().startswith("time (ms)") or (line[:10].isdigit() and line.count(",") >= 14):
        return "smartpower3"
    return "csv"


def read_power_log(path: str | Path, log_format: str = "auto", *, channel: str | int = "input",
                   rail: str | None = None, interval_ms: float = 1000) -> PowerTrace:
    """A power log in any of :data:`FORMATS` (``auto``: told from its first line): the reader of that
    format with ``channel`` (SmartPower3), ``rail`` and ``interval_ms`` (tegrastats)."""
    if log_format not in FORMATS:
        raise ProfileError(f"log format {log_format!r} is not known", f"use one of: {', '.join(FORMATS)}")
    path = Path(path)
    if log_format == "auto":
        log_format = _sniff(path)
    if log_format == "smartpower3":
        return read_smartpower3(path, channel=int(channel) if channel in ("0", "1") else channel)
    if log_format == "tegrastats":
        return read_tegrastats(path, interval_ms=interval_ms, rail=rail)
    return read_power_csv(path)
