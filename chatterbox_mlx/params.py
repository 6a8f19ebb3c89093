"""Generation parameters: one validation for every variant, before any work is done.

``resolve(variant, given)`` fills the variant's upstream defaults, refuses NaN, inf and
out-of-range values with a message naming the parameter and its range, and warns about
parameters the variant accepts but does not use (Turbo's ``exaggeration``, ``cfg_weight``
and ``min_p``, as upstream does).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

# name -> (low, high, low inclusive, high inclusive, what the bound means)
RANGES = {
    "temperature": (0.0, None, False, True, "> 0 (lower is more deterministic)"),
    "top_p": (0.0, 1.0, False, True, "in (0, 1] (1 disables it)"),
    "min_p": (0.0, 1.0, True, False, "in [0, 1) (0 disables it)"),
    "repetition_penalty": (0.0, None, False, True, "> 0 (1 disables it)"),
    "cfg_weight": (0.0, None, True, True, ">= 0 (0 disables guidance)"),
    # upstream's Gradio apps offer 0.25-2 ("extreme values can be unstable")
    "exaggeration": (0.25, 2.0, True, True, "in [0.25, 2] (0.5 is neutral)"),
    "speed": (0.5, 2.0, True, True, "in [0.5, 2] (1 is unchanged)"),
}
INTEGERS = {"top_k": 0, "max_new_tokens": 1}  # name -> smallest allowed value
BOOLEANS = ("norm_loudness",)
KNOWN = (*RANGES, *INTEGERS, *BOOLEANS)
CALL_INTEGERS = {"seed": 0, "chunk_tokens": 1, "flow_prompt_tokens": 0}  # not generation
MAX_SCHEDULE_LENGTH = 16


class ParameterError(ValueError):
    """A generation parameter is of the wrong kind or out of range."""


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value}")
    return value


def check_value(name: str, value):
    """The value, validated (numbers as float, counts as int)."""
    if name in INTEGERS or name in CALL_INTEGERS:
        smallest = INTEGERS.get(name, CALL_INTEGERS.get(name))
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            if isinstance(value, numbers.Real) and float(value).is_integer():
                value = int(value)
            else:
                raise ParameterError(f"{name} must be an integer >= {smallest}, got {value!r}")
        if value < smallest:
            raise ParameterError(f"{name} must be an integer >= {smallest}, got {value}")
        return int(value)
    if name in BOOLEANS:
        if not isinstance(value, bool):
            raise ParameterError(f"{name} must be True or False, got {value!r}")
        return value
    value = _number(name, value)
    low, high, low_in, high_in, meaning = RANGES[name]
    below = low is not None and (value < low if low_in else value <= low)
    above = high is not None and (value > high if high_in else value >= high)
    if below or above:
        raise ParameterError(f"{name} must be {meaning}, got {value:g}")
    return value


def check_schedule(schedule) -> tuple[int, ...]:
    """A streaming chunk schedule: one size, or sizes in order (the last repeats)."""
    sizes = (schedule,) if isinstance(schedule, numbers.Number) else schedule
    if isinstance(sizes, str) or not isinstance(sizes, Sequence):
        sizes = ()
    if not 1 <= len(sizes) <= MAX_SCHEDULE_LENGTH:
        raise ParameterError(
            f"chunk_tokens must be an integer >= 1 or a list of 1 to {MAX_SCHEDULE_LENGTH} "
            f"such integers (the last one repeats), got {schedule!r}"
        )
    return tuple(check_value("chunk_tokens", size) for size in sizes)


def parse_schedule(text: str) -> tuple[int, ...]:
    """A schedule from the command line: "25" or "10,50,100"."""
    try:
        return check_schedule([int(part) for part in text.split(",")])
    except ValueError as err:
        detail = err if isinstance(err, ParameterError) else f"got {text!r}"
        raise ValueError(
            f"expected speech tokens per chunk, one number or several such as 10,50,100 "
            f"(the last one repeats): {detail}"
        ) from None


def resolve(variant, given: Mapping, *, max_new_tokens_limit: int | None = None) -> dict:
    """The variant's defaults updated with the ``given`` values that are not None, all
    validated. Unknown names are refused; ignored ones warned about."""
    unknown = sorted(set(given) - set(KNOWN))
    if unknown:
        raise ParameterError(f"unknown generation parameters {unknown}; known: {sorted(KNOWN)}")
    chosen = {k: v for k, v in given.items() if v is not None}
    used = {k: check_value(k, v) for k, v in chosen.items() if k in variant.generation}
    for name, value in chosen.items():
        if name in used:
            continue
        # unused, but still one validation: in range, or the value upstream's signature
        # gives it for this variant (Turbo's exaggeration=0.0)
        default = variant.ignored.get(name)
        is_default = default is not None and _number(name, value) == default
        value = value if is_default else check_value(name, value)
        if not is_default:
            note = " (upstream ignores it too)" if name in variant.ignored else ""
            warnings.warn(f"{name}={value:g} is not used by {variant.name}{note}", stacklevel=3)
    params = dict(variant.generation)
    params.update(used)
    limit = max_new_tokens_limit
    if limit is not None and params["max_new_tokens"] > limit:
        raise ParameterError(
            f"max_new_tokens must be at most {limit} for this model, got {params['max_new_tokens']}"
        )
    return params
