"""Settings as text: ``--set section.field=value`` pairs in, the commented TOML document out (``plasticd config``)."""

from __future__ import annotations

import tomllib
from typing import Any

from plasticd.config import Settings
from plasticd.errors import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["model.neurons=800", "train.lr=1e-3"]`` into a nested dict.

    Values are parsed as TOML scalars where possible (numbers, booleans,
    arrays, quoted strings) and taken as plain strings otherwise.
    """
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.field=value, got {pair!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part!r} is a field, not a section")
        node[parts[-1]] = value
    return tree


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe_settings(settings: Settings) -> str:
    """The settings as a commented TOML document (a valid config file)."""
    lines = [
        "# plasticd settings: defaults < config file < PLASTICD_* env < flags.",
        "# Environment: PLASTICD_<SECTION>__<FIELD>, e.g. PLASTICD_MODEL__NEURONS=800",
    ]
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        lines += ["", f"[{section_name}]"]
        doc = (type(section).__doc__ or "").strip().splitlines()
        if doc:
            lines.append(f"# {doc[0]}")
        for field_name, field in type(section).model_fields.items():
            value = getattr(section, field_name)
            default = field.default
            note = f"  (default {_toml_value(default) if default is not None else 'unset'})" if value != default else ""
            lines.append(f"# {field.description}{note}")
            lines.append(f"{field_name} = {_toml_value(value)}" if value is not None else f"# {field_name} = (unset)")
    return "\n".join(lines) + "\n"
