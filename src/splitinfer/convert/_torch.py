"""PyTorch to ONNX: a ``torch.nn.Module`` and an exported program (``torch.export``, ``.pt2``) through
``torch.onnx.export(..., dynamo=True)``; a TorchScript module (``.pt``) through the TorchScript exporter
(``dynamo=False``), the one that takes a ScriptModule. torch is imported here, when a conversion runs."""

from __future__ import annotations

import inspect
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from splitinfer.convert._common import (
    Declared,
    Exported,
    example_inputs,
    missing_framework,
    output_names,
    rename_values,
    shapes_for,
)
from splitinfer.errors import ModelError, first_line

TORCHSCRIPT_OPSET = 17
_SAVE_HINT = ("save the module as an exported program (torch.export.save(torch.export.export(m, args), "
              "'m.pt2')) or as TorchScript (torch.jit.save(torch.jit.trace(m, args), 'm.pt'))")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise missing_framework("torch", "torch", "a PyTorch model") from None
    return torch


def is_module(obj: object) -> bool:
    """A ``torch.nn.Module`` or an exported program (without importing torch if it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(obj, torch.nn.Module | torch.export.ExportedProgram)


def load(source: object, fmt: str) -> Any:
    """The module or exported program of a ``.pt2`` / TorchScript file, or ``source`` itself."""
    torch = _torch()
    if not isinstance(source, str | Path):
        return source
    path = Path(source)
    if fmt == "torch.export":
        try:
            return torch.export.load(str(path))
        except Exception as e:  # torch raises RuntimeError, ValueError, zipfile errors by cause
            raise ModelError(f"cannot load {path} as an exported program ({first_line(e)})",
                             "write it with torch.export.save(torch.export.export(m, args), 'm.pt2')"
                             ) from None
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"{path} is not a TorchScript module ({first_line(e)}); a pickled module or a "
                         "state dict cannot be read safely nor without its code", _SAVE_HINT) from None


def declared(model: Any, fmt: str) -> tuple[list[Declared], dict[str, tuple[int, ...]]]:
    """The inputs the model takes and, for an exported program, the shapes it was exported at."""
    torch = _torch()
    if isinstance(model, torch.export.ExportedProgram):
        names = list(model.graph_signature.user_inputs)
        values = {n.name: n.meta.get("val") for n in model.graph.nodes if n.op == "placeholder"}
        out, defaults = [], {}
        for name in names:
            val = values.get(name)
            if not isinstance(val, torch.Tensor):
                raise ModelError(f"input {name!r} of the exported program is not a tensor",
                                 "export a module whose forward takes tensors only")
            dims = tuple(d if isinstance(d, int) else None for d in val.shape)
            out.append(Declared(name, dims, str(val.dtype).removeprefix("torch.")))
            defaults[name] = tuple(int(d) if isinstance(d, int) else int(d.node.hint or 1) for d in val.shape)
        return out, defaults
    if isinstance(model, torch.jit.ScriptModule):
        names = [a.name for a in model.forward.schema.arguments[1:]]
    else:
        params = inspect.signature(model.forward).parameters.values()
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                 and p.default is p.empty]
    return [Declared(n, None) for n in names], {}


def _flat(torch: Any, out: Any) -> tuple[list[Any], list[str] | None]:
    """The tensors of a module's output, in the order the exporters flatten it; a flat dict's keys."""
    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, Mapping):
        leaves = list(out.values())
        if all(isinstance(v, torch.Tensor) for v in leaves):
            return leaves, [str(k) for k in out]
    if isinstance(out, Sequence) and all(isinstance(v, torch.Tensor) for v in out):
        return list(out), None
    from torch.utils import _pytree

    return [v for v in _pytree.tree_leaves(out) if isinstance(v, torch.Tensor)], None


def _runner(torch: Any, call: Any, names: Sequence[str]) -> Any:
    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = call(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names])
        return [t.detach().cpu().numpy() for t in _flat(torch, out)[0]]

    return run


def convert(source: object, fmt: str, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
            seed: int, what: str) -> Exported:
    """``source`` (a module, exported program, or their file) as ONNX at the shapes given or declared."""
    torch = _torch()
    model = load(source, fmt)
    if not isinstance(model, torch.nn.Module | torch.export.ExportedProgram):
        raise ModelError(f"{what} holds a {type(model).__name__}, not a module", _SAVE_HINT)
    inputs, defaults = declared(model, fmt)
    shapes = shapes_for(inputs, input_shapes, batch, what, defaults)
    names = [d.name for d in inputs]
    arrays = example_inputs(inputs, shapes, seed)
    args = tuple(torch.from_numpy(arrays[n]) for n in names)
    training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        call = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        with torch.inference_mode():
            tensors, keys = _flat(torch, call(*args))
        proto, converter = _export(torch, model, args, names, len(tensors))
    except ModelError:
        raise
    except Exception as e:  # the exporters raise their own error types
        raise ModelError(f"torch.onnx cannot export {what}: {first_line(e)}",
                         "check that torch.export.export(model, args) succeeds on it") from None
    finally:
        if training:
            model.train()
    outputs = output_names(len(proto.graph.output), keys)
    rename_values(proto.graph, dict(zip([o.name for o in proto.graph.output], outputs, strict=False)))
    return Exported(proto, converter, shapes, _runner(torch, call, names))


def _export(torch: Any, model: Any, args: tuple, names: list[str], num_outputs: int
            ) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.onnx.export(model, args, buffer, dynamo=False, input_names=names,
                          output_names=output_names(num_outputs), opset_version=TORCHSCRIPT_OPSET)
        converter = f"torch.onnx TorchScript exporter {torch.__version__}"
        return onnx.load_from_string(buffer.getvalue()), converter
    if isinstance(model, torch.export.ExportedProgram):
        program = torch.onnx.export(model, dynamo=True, verbose=False)
    else:
        program = torch.onnx.export(model, args, dynamo=True, verbose=False, input_names=names)
    return program.model_proto, f"torch.onnx dynamo {torch.__version__}"
