"""The Recipe's fields by name and type: ``parse_field`` turns ``--set FIELD=VALUE`` text into a
value of the field's declared type, or says which fields exist and what the field expects.

``Recipe`` checks value ranges but not types; a value of the wrong type (``lr="abc"``) would
otherwise pass, the run folder would appear, and training would fail minutes later.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from functools import cache

from .recipe import Recipe

_WRONG = object()  # "does not fit the type" (None is a valid value)


@cache
def field_types() -> dict[str, object]:
    hints = typing.get_type_hints(Recipe)
    return {f.name: hints[f.name] for f in dataclasses.fields(Recipe)}


def parse_field(name: str, text: str):
    """The value of ``name`` written as ``text``: JSON (``0.002``, ``true``, ``null``, ``[48, 96]``),
    or the bare text for a field that takes a string (``dataset=celeba``). ValueError when the
    field is unknown or the value does not fit its type."""
    types_ = field_types()
    if name not in types_:
        raise ValueError(f"unknown recipe field {name!r}; valid fields: {', '.join(types_)}")
    kind = types_[name]
    try:
        value = _fit(kind, json.loads(text))
    except json.JSONDecodeError:
        value = _WRONG
    if value is _WRONG and _accepts_str(kind):
        value = text
    if value is _WRONG:
        raise ValueError(f"{name} expects {_describe(kind)}, got {text!r}")
    return value


def _fit(kind, value):
    """``value`` as ``kind`` (an int is a valid float, a list a valid tuple), or ``_WRONG``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            fitted = _fit(option, value)
            if fitted is not _WRONG:
                return fitted
        return _WRONG
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(value, list):
            return _WRONG
        items = [_fit(item, v) for v in value]
        return _WRONG if any(v is _WRONG for v in items) else tuple(items)
    if kind is type(None):
        return None if value is None else _WRONG
    if kind is bool:
        return value if isinstance(value, bool) else _WRONG
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if kind is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _WRONG
    if kind is str:
        return value if isinstance(value, str) else _WRONG
    raise TypeError(f"recipe field type {kind!r} is not handled")  # a new Recipe field type: teach _fit it


def _accepts_str(kind) -> bool:
    return kind is str or str in typing.get_args(kind)


def _describe(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return f"a JSON list of {'integers' if item is int else _describe(item)}, e.g. [48, 96]"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names[kind]
