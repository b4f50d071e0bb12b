"""Config checks with messages that name the field and the value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ValueError `"<field> must be one of (...), got <value>"` unless `value in choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices}, got {value!r}")


def check_divisible(owner: str, name: str, value: int, by_name: str, by: int) -> None:
    """Raises ValueError `"<owner>: <name>=<value> is not divisible by <by_name>=<by>"`."""
    if value % by:
        raise ValueError(f"{owner}: {name}={value} is not divisible by {by_name}={by}")
