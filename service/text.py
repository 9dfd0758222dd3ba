"""Rules for text from outside: control characters, one-line values, validation messages.

Imports nothing of ours; ingest, subscribers, mailer, feeds and config share these.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

# XML 1.0 forbids these; they never come from a real editor and break every feed reader.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
# The same, plus lone surrogates (a JSON escape can carry one): what a feed must drop.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
# Everything below space, tab and line breaks included, and DEL: no place in a header.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def single_line(value: str) -> str:
    """White space folded to single spaces, none at either end."""
    return " ".join(value.split())


def no_control_chars(value: str) -> str:
    """The value unchanged, or ValueError naming the first character a feed cannot carry."""
    match = CONTROL_CHARS.search(value)
    if match:
        raise ValueError(
            f"contains the control character U+{ord(match.group()):04X} at position "
            f"{match.start()}, which feeds cannot carry"
        )
    return value


def one_line(value: str) -> str:
    """A name typed into a form: no control character at all (tabs and breaks neither)."""
    if _ANY_CONTROL.search(value):
        raise ValueError("must be one line without control characters")
    return single_line(value)


def without_controls(value: str) -> str:
    """Control characters (CR, LF among them) replaced by spaces, ends stripped."""
    return _ANY_CONTROL.sub(" ", value).strip()


def describe_validation_error(exc: ValidationError, whole: str) -> str:
    """Each problem as `field.path: message`; `whole` names the value when no field does."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or whole}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )
