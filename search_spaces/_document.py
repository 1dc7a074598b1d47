"""Reading untrusted spec documents (YAML or JSON) into plain, bounded Python data.

Specs arrive over HTTP from users, so the reader is defensive: a size limit, a nesting limit,
no YAML anchors or aliases (the "billion laughs" expansion), no duplicate keys (the second
would silently win), only JSON-like values (YAML's dates, sets and binary are refused), and
every refusal is a :class:`SpecError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import yaml

from search_spaces._errors import SpecError

#: Largest accepted document, in bytes of UTF-8.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Deepest accepted nesting of mappings and lists (the root mapping is depth 1).
MAX_DEPTH = 20

_DOC = "spec"


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let the base class report it
                break
            if duplicate:
                raise SpecError(
                    _DOC, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_document(source: str | bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse a YAML or JSON document and return its plain data, checked by :func:`check_tree`.

    Raises :class:`SpecError` (field ``spec``) for non-UTF-8 bytes, documents over
    ``max_bytes``, syntax errors, several documents in one text, anchors or aliases,
    duplicate keys, nesting deeper than :data:`MAX_DEPTH` and non-JSON values.
    """
    text = _decode(source, max_bytes)
    data = _load_json(text)
    if data is _NOT_JSON:
        _scan_yaml_events(text)
        try:
            data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as exc:
            raise SpecError(_DOC, f"not valid YAML: {_describe_yaml_error(exc)}") from None
        except SpecError:
            raise
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            raise SpecError(_DOC, f"unreadable value: {exc}") from None
    check_tree(data, "")
    return data


def check_tree(data: Any, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Check ``data`` is JSON-like: str-keyed mappings, lists, str, int, finite float, bool, None.

    Also bounds the nesting depth. Iterative, so a hostile depth cannot exhaust the stack.
    The error's field is the dotted path below ``field`` (list items by index); with an empty
    ``field`` paths start at the top-level keys and the root itself is called ``spec``.
    """
    stack: list[tuple[Any, str, int]] = [(data, field, 1)]
    while stack:
        value, path, depth = stack.pop()
        where = path or _DOC
        if isinstance(value, Mapping) or isinstance(value, (list, tuple)):
            if depth > max_depth:
                raise SpecError(where, f"nested deeper than {max_depth} levels")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise SpecError(where, f"keys must be text, got {key!r}")
                    stack.append((item, _join(path, key), depth + 1))
            else:
                for index, item in enumerate(value):
                    stack.append((item, _join(path, str(index)), depth + 1))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise SpecError(where, f"must be a finite number, got {value!r}")
        elif value is not None and not isinstance(value, (str, int, bool)):
            raise SpecError(
                where, f"unsupported value of type {type(value).__name__}; use text or a number"
            )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _decode(source: str | bytes, max_bytes: int) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if len(raw) > max_bytes:
            raise SpecError(_DOC, f"document is {len(raw)} bytes; the limit is {max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(_DOC, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    elif isinstance(source, str):
        try:
            size = len(source.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise SpecError(_DOC, f"not valid Unicode text (offset {exc.start})") from None
        if size > max_bytes:
            raise SpecError(_DOC, f"document is {size} bytes; the limit is {max_bytes}")
        text = source
    else:
        raise SpecError(_DOC, f"expected text or bytes, got {type(source).__name__}")
    # A byte-order mark is legal in YAML but not in JSON; neither needs it.
    return text.removeprefix("\ufeff")


_NOT_JSON = object()


def _load_json(text: str) -> Any:
    """Parse ``text`` as JSON when it looks like JSON; ``_NOT_JSON`` to fall back to YAML."""
    if not text.lstrip().startswith(("{", "[")):
        return _NOT_JSON

    def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise SpecError(_DOC, f"duplicate key {key!r}")
            result[key] = value
        return result

    def no_constants(name: str) -> Any:
        raise SpecError(_DOC, f"{name} is not a number a spec may contain")

    try:
        return json.loads(text, object_pairs_hook=unique_pairs, parse_constant=no_constants)
    except json.JSONDecodeError:
        # A YAML flow mapping also starts with "{": let the YAML reader decide.
        return _NOT_JSON
    except SpecError:
        raise
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise SpecError(_DOC, f"unreadable value: {exc}") from None
    except RecursionError:
        raise SpecError(_DOC, f"nested deeper than {MAX_DEPTH} levels") from None


def _scan_yaml_events(text: str) -> None:
    """Refuse anchors, aliases, several documents and deep nesting before building objects."""
    depth = 0
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise SpecError(_DOC, f"YAML anchors and aliases are not allowed (line {line})")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise SpecError(_DOC, "expected one YAML document, found several")
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(_DOC, f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise SpecError(_DOC, f"not valid YAML: {_describe_yaml_error(exc)}") from None


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)
