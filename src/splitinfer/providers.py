"""Execution providers with options, in one text form used everywhere (cluster.yaml, ``worker
--providers``, profiles, messages): ``NAME`` or ``NAME:key=value;key=value``.

Options are separated by ``;`` and split at the first ``=``, because values may hold ``:`` and ``,``
(OpenVINO's ``device_type=HETERO:MYRIAD,CPU``). ONNX Runtime takes every option as a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from splitinfer.errors import SplitinferError

MAX_PROVIDER_CHARS = 1_000
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")


def parse_provider(text: str, what: str = "provider", error: type[SplitinferError] = SplitinferError
                   ) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:key=value;key=value`` as (name, options); ``error`` naming ``what`` if malformed."""
    if not isinstance(text, str) or not text or len(text) > MAX_PROVIDER_CHARS:
        raise error(f"{what} {str(text)[:60]!r} is not a provider",
                    "give a name like CPUExecutionProvider, with options as NAME:key=value;key=value")
    name, _, rest = text.partition(":")
    if not _NAME.fullmatch(name):
        raise error(f"{what} {text[:60]!r} does not start with a provider's name",
                    "give a name like OpenVINOExecutionProvider, then :key=value;key=value for options")
    options: dict[str, str] = {}
    for part in rest.split(";") if rest else ():
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not _KEY.fullmatch(key):
            raise error(f"{what} {text[:60]!r}: option {part[:40]!r} is not key=value",
                        "write options as NAME:key=value;key=value (e.g. "
                        "OpenVINOExecutionProvider:device_type=CPU)")
        if key in options:
            raise error(f"{what} {text[:60]!r} gives option {key!r} twice", "give each option once")
        options[key] = value.strip()
    return name, options


def provider_text(name: str, options: Mapping[str, object] | None = None) -> str:
    """The text form of a provider and its options (values as ONNX Runtime reads them: strings)."""
    if not options:
        return name
    return name + ":" + ";".join(f"{k}={_value(v)}" for k, v in options.items())


def _value(value: object) -> str:
    if isinstance(value, bool):  # ONNX Runtime's providers read "True"/"False" or "1"/"0"; YAML gives bools
        return "True" if value else "False"
    return str(value)


def provider_names(providers: Sequence[str]) -> list[str]:
    """The names alone (what ``onnxruntime.get_available_providers()`` lists)."""
    return [p.partition(":")[0] for p in providers]


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def uses_gpu(providers: Sequence[str]) -> bool:
    """Whether a device with these providers runs its stages on an NVIDIA GPU."""
    return any(name in GPU_PROVIDERS for name in provider_names(providers))
