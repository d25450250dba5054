"""Reading a config: YAML 1.2 (unique keys), dotted overrides, values checked against the
dataclasses' type hints (``nmt.config`` holds the dataclasses and their ranges).

Unknown keys and values of the wrong type are errors (``ConfigError``), so a typo never silently
falls back to a default; a value is converted only where that loses nothing (an int for a float).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any, Literal

import yaml

from nmt.errors import ConfigError


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting only where it is lossless."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {hint}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 as a string; it means a number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """A ``cls`` dataclass from plain data: an unknown key or a value of the wrong type is a
    ``ConfigError`` naming it (``where``: the dotted path of ``values``, "" at the top)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """Read the right-hand side of an override with YAML rules (``1e-3``, ``true``, ``[a, b]``)."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse override value {text!r}") from exc
    except ConfigError as exc:  # a key given twice, a value inside itself: say which override
        raise ConfigError(f"override value {text!r}: {exc}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``section.key=value`` overrides applied."""
    try:
        raw = json.loads(json.dumps(raw))  # deep copy of plain data
    except (TypeError, ValueError) as exc:  # an explicit YAML tag: !!set, !!binary, !!timestamp …
        raise ConfigError(f"a value is not text, a number, true/false, a list or a mapping ({exc})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part} is not a section")
        node[parts[-1]] = _parse_scalar(text)
    return raw


_YAML_1_1 = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last,
    so a second ``train:`` section would silently drop the first one's settings. And booleans and
    integers are YAML 1.2's: YAML 1.1 also reads yes/no/on/off/y/n as booleans, so Norwegian
    (``src_lang: no``) became False; a leading zero as octal (``seed: 010`` was 8) and ``1:30`` as
    sexagesimal (90); a date as a date (``name: 2024-05-01``, a string in YAML 1.2, ended in a
    traceback). Integers are decimal (``100_000`` too), ``0x…`` or ``0o…``."""

    yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_1_1]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream):
        super().__init__(stream)
        self.open_anchors: set[str] = set()  # anchors of the lists and mappings being read

    def compose_node(self, parent, index):
        """The next node, as PyYAML composes it; an alias inside the list or mapping its anchor names
        (``x: &x [*x]``) is a ``ConfigError``: PyYAML builds a value that contains itself, which
        the overrides' copy met as "Circular reference detected" (PyYAML refuses an anchor given
        twice, so a name is one node)."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.open_anchors:
            raise ConfigError(f"line {event.start_mark.line + 1}: *{event.anchor} is inside &{event.anchor} "
                              f"itself; a value cannot contain itself")
        opened = event.anchor if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)) else None
        if opened is not None:
            self.open_anchors.add(opened)
        try:
            return super().compose_node(parent, index)
        finally:
            self.open_anchors.discard(opened)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node).replace("_", "")
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
        if digits[:2] in ("0x", "0o"):
            return sign * int(digits[2:], 16 if digits[1] == "x" else 8)
        return sign * int(digits)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be given here again
                continue
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a]`: a list as a key ended in a TypeError
                kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                raise ConfigError(f"line {key_node.start_mark.line + 1}: a key must be a name, not {kind}")
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:int",
                                       re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F][0-9a-fA-F_]*|0o[0-7][0-7_]*)$"),
                                       list("-+0123456789"))
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)


# far more than any config holds (the default: about 100 values of a few characters each): what
# aliases may expand to, counting each value and each string's characters
MOST_ITEMS = 1_000_000


def load_yaml(text: str) -> Any:
    """``text`` as YAML 1.2 with unique keys (``_UniqueKeyLoader``); yaml.YAMLError or
    ConfigError (a key given twice, more than ``MOST_ITEMS`` items) where it is not."""
    value = yaml.load(text, Loader=_UniqueKeyLoader)
    if (count := _items(value, {})) > MOST_ITEMS:
        raise ConfigError(f"grows to {count:,} items (values, and the characters of strings) once its aliases are "
                          f"expanded (*name repeats &name's value), more than the {MOST_ITEMS:,} a config may hold")
    return value


def _items(value: Any, counted: dict[int, int]) -> int:
    """How big ``value`` is once expanded: each value (the lists and mappings themselves, their keys
    and items) and each string's characters. PyYAML builds an alias as the anchor's own object, so
    a few lines of aliases of aliases ("billion laughs"), or a long string repeated by an alias, were
    one small object here, and the overrides' copy expanded them until memory ran out; each object
    is counted once (``counted``: by id), so this stays small."""
    if isinstance(value, str):
        return 1 + len(value)
    if not isinstance(value, (list, dict)):
        return 1
    if id(value) not in counted:
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        counted[id(value)] = 1 + sum(_items(item, counted) for item in items)
    return counted[id(value)]
