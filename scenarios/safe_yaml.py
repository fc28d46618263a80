"""YAML from an untrusted file, bounded before any Python object is built.

Scenario files are uploaded by visitors. Plain ``yaml.safe_load`` is not enough for that:
a 451-byte file of nested aliases (``b: [*a, *a, ...]``, the "billion laughs") expands to
billions of references and cost 111 s and 3.2 GB; deep nesting overflows the recursion
limit; a 5000-digit integer raises ``ValueError`` from ``int()``. :func:`load` composes the
node tree once, with a loader that refuses, as soon as the parser reaches them:

* anchors and aliases (``&name`` / ``*name``) -- a scenario never needs them;
* more than :data:`MAX_NODES` nodes or nesting deeper than :data:`MAX_DEPTH`;
* an integer written with more than :data:`MAX_INT_CHARS` characters (a u64 needs 20
  decimal digits, or ``0b`` and 64 binary ones);
* more than one document;

and refuses a text longer than :data:`MAX_TEXT_BYTES` before parsing at all. It returns
the node tree (for line numbers) and the data built from that same tree.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_TEXT_BYTES = 1 << 20
MAX_NODES = 20_000
MAX_DEPTH = 32
MAX_INT_CHARS = 70


class YamlLimitError(ValueError):
    """The text is refused; ``line`` is 1-based (0: the text as a whole)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts and refuses (see the module docstring)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise YamlLimitError(line, "anchors and aliases (&name, *name) are not allowed "
                                       "in a scenario")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YamlLimitError(line, f"more than {MAX_NODES} values in one file")
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(line, f"nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        chars = len(str(node.value))
        if chars > MAX_INT_CHARS:
            raise YamlLimitError(node.start_mark.line + 1, f"an integer written with {chars} "
                                                           f"characters (at most {MAX_INT_CHARS})")
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def load(text: str) -> tuple[yaml.Node | None, Any]:
    """``(root node, data)`` of one YAML document; raises YamlLimitError or yaml.YAMLError."""
    size = len(text) if len(text) > MAX_TEXT_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_TEXT_BYTES:
        raise YamlLimitError(0, f"the file has {size} bytes (at most {MAX_TEXT_BYTES})")
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data
