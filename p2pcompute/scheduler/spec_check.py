"""Checking a job.yaml against the shipped JSON Schema: every problem, with its path and line.

``schema_problems(data)`` runs the schema (``job_schema.json``, draft 2020-12,
through the ``jsonschema`` library) and turns each error into a ``Problem``:
the path in the file as people write it (``stages[1].map.batch``) and a
message (``-3 is less than the minimum of 1``). Where the library's wording
would not help (a ``oneOf`` that failed, a regular expression), the schema
carries its own text under ``x-message``; an unknown key is named with the
keys that would be valid. ``lines_of(text)`` maps each path to its line in
the YAML source, so the CLI can print ``job.yaml:12: stages[1].map.batch: ...``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

MAX_PROBLEMS = 200


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a job file: where (``stages[1].map.batch``; "" for the whole file) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of job.yaml v1, as shipped in the package."""
    text = resources.files(__package__).joinpath("job_schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def format_path(parts: Iterable[Any]) -> str:
    """``["stages", 1, "map", "batch"]`` -> ``stages[1].map.batch``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def schema_problems(data: Any) -> list[Problem]:
    """Every schema error in ``data`` (a parsed job.yaml), sorted by path, at most ``MAX_PROBLEMS``."""
    found = set()
    for error in _validator().iter_errors(data):
        for path, message in _explain_all(error):
            found.add(Problem(format_path(path), message))
        if len(found) >= MAX_PROBLEMS:
            break
    return sorted(found)


def _explain_all(error: ValidationError) -> list[tuple[list[Any], str]]:
    """An unknown key is a problem at that key (so the rest of its mapping is still checked)."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict) and \
            not error.schema.get("x-message"):
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        return [([*error.absolute_path, key], f"unknown key; expected one of {', '.join(allowed)}") for key in extra]
    return [_explain(error)]


def _explain(error: ValidationError) -> tuple[list[Any], str]:
    path = list(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        path.append(error.instance)  # the key itself is wrong: point at it
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if custom:
        return path, custom.replace("{value}", _show(error.instance))
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _explain(best_match(error.context))
    return path, error.message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def lines_of(text: str) -> dict[str, int]:
    """Path (as ``format_path`` writes it) -> 1-based line of that key or item in the YAML ``text``;
    {} if the text does not parse."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    stack: list[tuple[Any, list[Any]]] = [(root, [])] if root is not None else []
    while stack and len(out) < 1_000_000:
        node, path = stack.pop()
        out.setdefault(format_path(path), node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + [key.value]
                out.setdefault(format_path(child), key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                stack.append((value, path + [i]))
    return out


def with_lines(problems: Iterable[Problem], lines: dict[str, int]) -> list[Problem]:
    """Each problem with the line of its path, or of the nearest enclosing path the file has."""
    out = []
    for p in problems:
        path, line = p.path, None
        while line is None:
            line = lines.get(path)
            if line is not None or not path:
                break
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        out.append(Problem(p.path, p.message, line))
    return out
