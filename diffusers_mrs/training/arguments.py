"""A command line built from a dataclass: one ``--flag`` per field, with argparse alone.

Types, choices (``Literal`` fields, or ``metadata["choices"]`` for lists), help
(``metadata["help"]``) and extra names (``metadata["aliases"]``) come from the fields, the
conventions of ``transformers.HfArgumentParser`` (which the training options used before;
this needs no optional dependency, so ``--help`` works on the base install):

- ``--name`` and ``--name-with-dashes``;
- booleans: ``--flag`` (true), ``--flag true|false``, and ``--no_flag`` when the default is true;
- ``list[...]``: one or more values; ``dict[...]``: JSON;
- optional (``X | None``) numbers and strings: ``none``, ``null`` or an empty value is None.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Sequence
from typing import Any, Literal

_TRUE, _FALSE = ("true", "yes", "y", "t", "1"), ("false", "no", "n", "f", "0")


def _bool(text: str) -> bool:
    value = text.lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none_or(kind: Any) -> Any:
    """Argument type of an optional field: ``none`` (any case) or an empty value is None."""

    def convert(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def _field_options(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """argparse keywords (type, nargs, choices) for a field of type ``hint``."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"type": _bool, "nargs": "?", "const": True}
    if origin is Literal:
        return {"type": type(typing.get_args(hint)[0]), "choices": typing.get_args(hint)}
    if origin is list:
        return {"type": typing.get_args(hint)[0], "nargs": "+",
                "choices": field.metadata.get("choices")}
    if origin is dict:
        return {"type": json.loads}
    return {"type": _none_or(hint) if optional and hint in (int, float, str) else hint}


def dataclass_parser(cls: type, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one ``--flag`` per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = (field.default_factory() if field.default is dataclasses.MISSING
                   else field.default)
        names = [f"--{field.name}"]
        if "_" in field.name:
            names.append(f"--{field.name.replace('_', '-')}")
        names += list(field.metadata.get("aliases", []))
        parser.add_argument(*names, dest=field.name, default=default,
                            help=field.metadata.get("help", ""),
                            **_field_options(field, hints[field.name]))
        if hints[field.name] is bool and default is True:
            parser.add_argument(f"--no_{field.name}", dest=field.name, action="store_false",
                                help=argparse.SUPPRESS)
    return parser


def parse_into(cls: type, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``cls(**flags)`` from the command line ``argv`` (default: ``sys.argv[1:]``)."""
    return cls(**vars(parser.parse_args(None if argv is None else list(argv))))
