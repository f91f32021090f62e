"""Who makes and who reads each tensor of a graph, and which tensors are constants.

A tensor is a *constant* when it is an initializer, the output of a node whose
inputs are all constants (``Constant`` included), or the output of ``Shape`` /
``Size`` on a tensor whose shape is known. Once the input shapes are fixed,
every shape is known, so the ``Shape -> Gather -> Concat -> Reshape`` chains
that real exports are full of become constants too: they travel with the
weights (each partition gets its own copy) and never cross a cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

# Random ops give a new value on every run: never constant, even without inputs.
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def list_subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _collect_names(graph: onnx.GraphProto, defined: set[str], used: list[str]) -> None:
    defined.update(i.name for i in graph.input)
    defined.update(t.name for t in graph.initializer)
    defined.update(t.values.name for t in graph.sparse_initializer)
    for node in graph.node:
        used.extend(name for name in node.input if name)
        defined.update(name for name in node.output if name)
        for sub in list_subgraphs(node):
            _collect_names(sub, defined, used)
    used.extend(o.name for o in graph.output)


def list_implicit_inputs(node: onnx.NodeProto) -> tuple[str, ...]:
    """Outer-scope tensors that the node's subgraphs read (in first-use order)."""
    subs = list_subgraphs(node)
    if not subs:
        return ()
    defined: set[str] = set()
    used: list[str] = []
    for sub in subs:
        _collect_names(sub, defined, used)
    # Shadowing across nesting levels is ignored: a name defined anywhere inside
    # counts as inner. Exporters do not reuse outer names inside bodies.
    return tuple(dict.fromkeys(n for n in used if n not in defined))


def fold_shape(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    """The value of a ``Shape`` or ``Size`` node whose input has the given shape."""
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    start, end = 0, None
    for attr in node.attribute:
        if attr.name == "start":
            start = attr.i
        elif attr.name == "end":
            end = attr.i
    # Shape-15 start/end clamp like Python slicing does.
    return np.array(shape[start:end], dtype=np.int64)


@dataclass
class GraphIndex:
    """Producers, consumers and constants of a model's main graph.

    ``inputs_of[node]`` lists explicit inputs then implicit (subgraph) ones,
    without empty names. ``folded`` maps each ``Shape``/``Size`` output whose
    input is not constant to its value.
    """

    nodes: dict[str, onnx.NodeProto]
    file_position: dict[str, int]
    inputs_of: dict[str, tuple[str, ...]]
    producer: dict[str, str]
    consumers: dict[str, list[str]]
    initializers: dict[str, onnx.TensorProto]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]
    constants: set[str] = field(default_factory=set)
    constant_nodes: set[str] = field(default_factory=set)
    folded: dict[str, np.ndarray] = field(default_factory=dict)

    def live_nodes(self) -> list[str]:
        """Non-constant nodes in file order: the nodes that blocks are made of."""
        return [n for n in self.nodes if n not in self.constant_nodes]


def index_graph(graph: onnx.GraphProto, shapes: Mapping[str, tuple[int, ...]]) -> GraphIndex:
    """Index a main graph whose nodes all have unique names.

    ``shapes`` gives the known concrete shapes; it decides which ``Shape``
    and ``Size`` nodes fold into constants.
    """
    initializers = {t.name: t for t in graph.initializer}
    index = GraphIndex(
        nodes={}, file_position={}, inputs_of={}, producer={}, consumers={},
        initializers=initializers,
        graph_inputs=tuple(i.name for i in graph.input if i.name not in initializers),
        graph_outputs=tuple(o.name for o in graph.output),
    )
    index.constants.update(initializers)
    index.constants.update(t.values.name for t in graph.sparse_initializer)
    for pos, node in enumerate(graph.node):
        name = node.name
        index.nodes[name] = node
        index.file_position[name] = pos
        inputs = tuple(dict.fromkeys([i for i in node.input if i] + list(list_implicit_inputs(node))))
        index.inputs_of[name] = inputs
        for t in inputs:
            index.consumers.setdefault(t, []).append(name)
        outputs = [o for o in node.output if o]
        for o in outputs:
            index.producer[o] = name
        # File order is topological (the checker enforces it), so one pass
        # sees every input's constness before the node.
        if node.op_type in RANDOM_OPS:
            continue
        if all(t in index.constants for t in inputs):
            index.constant_nodes.add(name)
            index.constants.update(outputs)
        elif node.op_type in ("Shape", "Size") and node.input[0] in shapes and node.domain in ("", "ai.onnx"):
            index.constant_nodes.add(name)
            index.constants.update(outputs)
            index.folded[outputs[0]] = fold_shape(node, shapes[node.input[0]])
    return index
