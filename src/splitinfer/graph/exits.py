"""Early exits: model outputs at which a confident request may stop, and their confidence rules.

An *exit* is a model output other than the last one, with a rule that says per sample whether
the exit's tensor is confident enough to be the answer:

- ``softmax_max``: the top class's softmax probability is at least ``threshold`` (in (0, 1];
  the default, with 0.9);
- ``entropy``: the softmax's entropy, in nats, is at most ``threshold`` (0 or more);
- ``onnx``: a user ONNX graph (``rule_path``) with one input, the exit's tensor, and one bool
  output, one value per sample.

The softmax rules read logits ``[batch, classes]``. A sample with a non-finite logit is never
confident: it goes on to the later exits. Exits come from the API (``exits=``) or from the
model's metadata key :data:`EXITS_KEY`, a JSON list of ``{"output", "rule", "threshold"}``
(``"rule_path"`` for an ``onnx`` rule, relative to the model's folder) in depth order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import onnx

from splitinfer.errors import ModelError, read_file
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.model import Model
from splitinfer.quality.confidence import EXITS_KEY, confidence
from splitinfer.units import check_number

if TYPE_CHECKING:
    import onnxruntime as ort

RULES = ("softmax_max", "entropy", "onnx")
DEFAULT_RULE = "softmax_max"
DEFAULT_THRESHOLD = 0.9  # of softmax_max; entropy has no threshold that suits every class count
_METADATA = f"the model's metadata {EXITS_KEY!r}"
_FORMAT = '[{"output": NAME, "rule": "softmax_max", "threshold": 0.9}, ...]'


class Exit(msgspec.Struct, frozen=True, omit_defaults=True):
    """An exit: the model output ``output`` and its confidence rule (``threshold`` for the softmax
    rules, ``rule_path`` for an ``onnx`` rule)."""

    output: str
    rule: str = DEFAULT_RULE
    threshold: float | None = None
    rule_path: str | None = None


def read_exits(model: Model | onnx.ModelProto, exits: Sequence[str | Exit] | None = None, *,
               rule: str | None = None, threshold: float | None = None,
               rule_path: str | Path | None = None) -> tuple[Exit, ...]:
    """The model's exits, checked: ``exits`` (output names or :class:`Exit`), else its metadata
    (:data:`EXITS_KEY`; none: no exits).

    A name takes ``rule``, ``threshold`` and ``rule_path`` where given, else the metadata's entry
    for that output, else ``softmax_max`` at 0.9. Raises :class:`ModelError` for an exit that is
    not an output, the last output, an exit given twice, an unknown rule, a threshold outside its
    rule's range, a rule graph that is missing or not one tensor in and one bool out, and
    metadata that is not a list of exits.
    """
    proto = model.proto if isinstance(model, Model) else model
    folder = model.path.parent if isinstance(model, Model) and model.path is not None else None
    declared = {e.output: e for e in _from_metadata(proto, folder)}
    if exits is None:
        found, where = list(declared.values()), _METADATA
    else:
        if isinstance(exits, str):
            raise ModelError(f"exits= is the string {exits!r}", "give a list of output names, e.g. "
                             f"exits={[n.strip() for n in exits.split(',')]!r}")
        given = rule is not None or threshold is not None or rule_path is not None
        found, where = [], "exits="
        for item in exits:
            if isinstance(item, Exit):
                found.append(item)
            elif item in declared and not given:
                found.append(declared[item])
            else:
                chosen = rule or DEFAULT_RULE
                default = DEFAULT_THRESHOLD if chosen == "softmax_max" else None
                found.append(Exit(str(item), chosen, default if threshold is None else threshold,
                                  None if rule_path is None else str(rule_path)))
    outputs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    last = proto.graph.output[-1].name
    seen: set[str] = set()
    for e in found:
        _check_exit(e, outputs, last, where)
        if e.output in seen:
            raise ModelError(f"exit {e.output!r} is given twice in {where}", "list each exit once")
        seen.add(e.output)
    return tuple(found)


def _from_metadata(proto: onnx.ModelProto, folder: Path | None) -> list[Exit]:
    text = next((p.value for p in proto.metadata_props if p.key == EXITS_KEY), None)
    if text is None:
        return []
    try:
        found = msgspec.convert(json.loads(text), list[Exit])
    except (ValueError, msgspec.ValidationError) as e:
        raise ModelError(f"{_METADATA} is not a list of exits: {e}",
                         f"write it as JSON {_FORMAT}, or give exits=") from None
    if folder is None:
        return found
    return [msgspec.structs.replace(e, rule_path=str(folder / e.rule_path))
            if e.rule_path is not None and not Path(e.rule_path).is_absolute() else e for e in found]


def _check_exit(e: Exit, outputs: dict[str, int], last: str, where: str) -> None:
    name = e.output
    if name not in outputs:
        raise ModelError(f"exit {name!r} (in {where}) is not an output of the model",
                         f"give outputs of the model as exits: {', '.join(list(outputs)[:-1]) or 'none'}")
    if name == last:
        raise ModelError(f"exit {name!r} (in {where}) is the model's last output, which every request "
                         "reaches", "declare only earlier outputs as exits; the last one is the final answer")
    if e.rule not in RULES:
        raise ModelError(f"exit {name!r} has rule {e.rule!r}",
                         "use rule= softmax_max, entropy, or onnx (with rule_path=)")
    if e.rule == "onnx":
        if e.rule_path is None:
            raise ModelError(f"exit {name!r} has rule 'onnx' without a graph",
                             "give rule_path= an .onnx file")
        if e.threshold is not None:
            raise ModelError(f"exit {name!r} has rule 'onnx' and a threshold", "drop threshold=: the graph "
                             "decides alone")
        _check_rule_graph(name, e.rule_path, outputs[name])
        return
    if e.rule_path is not None:
        raise ModelError(f"exit {name!r} has rule {e.rule!r} and a rule_path", "use rule='onnx' with "
                         "rule_path=, or drop rule_path=")
    what = f"the threshold of exit {name!r} (rule {e.rule})"
    if e.threshold is None:
        raise ModelError(f"{what} is missing", "give threshold= (the entropy in nats, e.g. 0.3)")
    if e.rule == "softmax_max":
        check_number(e.threshold, what, low=0.0, high=1.0, low_open=True, error=ModelError,
                     fix="threshold= is the top class's probability")
    else:
        check_number(e.threshold, what, low=0.0, error=ModelError, fix="threshold= is an entropy in nats")


def _check_rule_graph(name: str, path: str, elem_type: int) -> None:
    proto = _load_rule(name, path)
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    outputs = list(proto.graph.output)
    fix = "give a graph with one input (the exit's tensor) and one bool output (one value per sample)"
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the rule graph {path} of exit {name!r} has {len(inputs)} input(s) and "
                         f"{len(outputs)} output(s)", fix)
    if outputs[0].type.tensor_type.elem_type != onnx.TensorProto.BOOL:
        raise ModelError(f"the rule graph {path} of exit {name!r} does not return a bool", fix)
    given = inputs[0].type.tensor_type.elem_type
    if given != elem_type:
        want, got = (onnx.helper.tensor_dtype_to_np_dtype(t).name for t in (elem_type, given))
        raise ModelError(f"the rule graph {path} of exit {name!r} takes {got}, the exit is {want}",
                         f"make the graph's input {want}")


def _load_rule(name: str, path: str) -> onnx.ModelProto:
    data = read_file(path, f"the rule graph of exit {name!r}", "give rule_path= an .onnx file", ModelError)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError or RuntimeError by backend
        proto = onnx.ModelProto()
    if not proto.HasField("graph"):
        raise ModelError(f"the rule graph {path} of exit {name!r} is not an ONNX model",
                         "give rule_path= an .onnx file")
    return proto


# ---- the rules --------------------------------------------------------------------------------

def is_confident(exit: Exit, values: np.ndarray) -> np.ndarray:
    """One bool per sample of ``values`` (the exit's tensor, batch first): whether its rule lets
    the sample stop at this exit."""
    if exit.rule == "onnx":
        return _run_rule(exit, np.asarray(values))
    scores = confidence(exit.rule, values)
    threshold = DEFAULT_THRESHOLD if exit.threshold is None else exit.threshold
    # NaN compares false either way: a sample with a non-finite logit is never confident.
    return scores >= threshold if exit.rule == "softmax_max" else scores <= threshold


@lru_cache(maxsize=16)
def _rule_session(name: str, path: str) -> ort.InferenceSession:
    # One inference session per rule graph for the process: a rule runs on every request.
    return create_inference_session(_load_rule(name, path).SerializeToString(), num_threads=1)


def _run_rule(exit: Exit, values: np.ndarray) -> np.ndarray:
    assert exit.rule_path is not None
    session = _rule_session(exit.output, exit.rule_path)
    where = f"the rule graph {exit.rule_path} of exit {exit.output!r}"
    try:
        (result,) = session.run(None, {session.get_inputs()[0].name: values})
    except Exception as e:  # ORT's own error types: a shape or dtype the graph does not take
        raise ModelError(f"{where} failed on a tensor of shape {values.shape}: {e}".splitlines()[0],
                         "make the graph take the exit's tensor, batch first") from None
    batch = values.shape[0] if values.ndim else 1
    result = np.asarray(result)
    if result.dtype != np.bool_ or result.size != batch:
        raise ModelError(f"{where} returned {result.dtype} of shape {result.shape} for {batch} sample(s)",
                         "return one bool per sample: shape [batch] or [batch, 1]")
    return result.reshape(batch)
