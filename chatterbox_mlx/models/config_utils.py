"""One strict ``from_dict`` for every network's config dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], params: Mapping, what: str | None = None) -> T:
    """``cls(**params)``, refusing unknown fields and values of the wrong kind by name.

    A field whose default is an int, float, bool or str must get a value of that kind
    (an int is accepted for a float); nested dicts and lists pass through unchecked."""
    what = what or cls.__name__
    if not isinstance(params, Mapping):
        raise ValueError(f"{what}: expected a JSON object, got {type(params).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown fields {unknown}; known fields: {sorted(known)}")
    for name, value in params.items():
        default = known[name].default
        expected = type(default) if isinstance(default, (bool, int, float, str)) else None
        if expected is None:
            continue
        ok = isinstance(value, expected)
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ValueError(
                f"{what}.{name}: expected {expected.__name__}, got {value!r} "
                f"({type(value).__name__})"
            )
    return cls(**dict(params))
