"""Field checks shared by the scenario, book and limits loaders; errors name source and field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stress_plugin.core.errors import NO_VALUE, StressError

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FILE_BYTES_DEFAULT = 64 * 1024 * 1024
"""Scenario and book files larger than this are refused (``STRESS_MAX_FILE_BYTES``)."""
MAX_ALIAS_NODES = 100_000
"""YAML aliases may add at most this many nodes: a few hundred bytes of nested aliases would
otherwise expand to gigabytes (PyYAML's ``safe_load`` does not bound it)."""
MAX_DEPTH = 100
"""Deepest nesting checked in a YAML document with anchors (a book or scenario needs 3);
without anchors libyaml's own limit (1,000 levels) applies."""
MAX_MAGNITUDE = 1e12
"""Largest |quantity|, price, spread, multiplier, equity and VaR: with |delta| and |gamma| at
most ``MAX_GREEK`` no product of the model can overflow a float64
(docs/model.md, "Finite numbers")."""
MAX_GREEK = 1e3


def parse_yaml(text: str) -> Any:
    """Safe YAML, with libyaml's C loader when present (several times faster), with aliases
    and nesting bounded. Raises ``yaml.YAMLError`` (``TooComplex`` for the bounds)."""
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "&" in text:  # no anchor, no alias: nothing to expand
            _check_expansion(node)
        return loader.construct_document(node)
    except RecursionError:
        raise TooComplex(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


class TooComplex(yaml.YAMLError):
    """A document over the alias-expansion or nesting bound."""


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes the document would expand to (an alias is the same node object again),
    memoized per node, stopping at the first bound crossed: a bomb fails in milliseconds."""
    sizes: dict[int, int] = {}
    distinct = 0
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise TooComplex(f"nested deeper than {MAX_DEPTH} levels")
        if id(node) in sizes and not done:
            continue
        children = _children(node)
        if not done:
            distinct += 1
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        if sizes[id(node)] - distinct > MAX_ALIAS_NODES:
            raise TooComplex(f"aliases expand to more than {MAX_ALIAS_NODES:,} extra nodes")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_text(path: Path, error: type[StressError], limit: int = MAX_FILE_BYTES_DEFAULT) -> str:
    """The UTF-8 text of ``path``, refusing a file over ``limit`` bytes (the runtime passes
    ``STRESS_MAX_FILE_BYTES``) without reading more than that; ``error`` names the file."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise error(str(path), None, NO_VALUE, f"cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise error(str(path), None, NO_VALUE,
                    f"is larger than {limit:,} bytes (STRESS_MAX_FILE_BYTES)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(str(path), None, NO_VALUE,
                    f"is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})"
                    ) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line, without the excerpt of the file PyYAML prints (no file contents echoed)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {problem}"


def number(
    error: type[StressError],
    source: str,
    field: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> float:
    """``value`` as a finite float within the bounds, or ``error`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(source, field, value, "must be a number")
    result = float(value)
    if not math.isfinite(result):
        raise error(source, field, value, "must be a finite number")
    if gt is not None and not result > gt:
        raise error(source, field, value, f"must be > {gt:g}")
    if ge is not None and not result >= ge:
        raise error(source, field, value, f"must be >= {ge:g}")
    if le is not None and not result <= le:
        raise error(source, field, value, f"must be <= {le:g}")
    return result


def known_fields(
    error: type[StressError], source: str, data: Any, allowed: set[str], prefix: str = ""
) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``allowed`` keys, or ``error`` naming the first stranger."""
    if not isinstance(data, Mapping):
        raise error(source, prefix.rstrip(".") or None, type(data).__name__, "must be a mapping")
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise error(source, f"{prefix}{key}", data[key], f"unknown field (known: {known})")
    return data


def required(error: type[StressError], source: str, data: Mapping[str, Any], field: str,
             prefix: str = "") -> Any:
    if field not in data:
        from stress_plugin.core.errors import NO_VALUE

        raise error(source, f"{prefix}{field}", NO_VALUE, "is required")
    return data[field]
