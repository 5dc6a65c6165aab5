"""Source forms generated from each connector's config schema (its pydantic ``Config``): one input per option,
typed from the schema, and the config read back from a posted form. The connector validates it afterwards, as
for the API and the CLI; nothing here decides what is allowed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kadapt.errors import InvalidInput

__all__ = ["ConfigField", "config_fields", "config_from_form", "field_name"]

# JSON schema type -> the input that edits it
_WIDGETS = {"string": "text", "integer": "number", "number": "number", "boolean": "checkbox", "array": "lines"}


@dataclass(frozen=True)
class ConfigField:
    """One option of a connector's config, as a form shows it."""

    name: str  # the config key
    label: str
    widget: str  # text, number, checkbox, lines (one item per line), json
    required: bool
    help: str
    default: Any
    step: str = "any"  # for numbers: "1" for integers

    def value(self, config: dict[str, Any] | None) -> str:
        """The input's text for ``config`` (a source's current config), else the default."""
        value = (config or {}).get(self.name, self.default)
        if value is None:
            return ""
        if self.widget == "lines":
            return "\n".join(str(item) for item in value)
        if self.widget == "json":
            return json.dumps(value, indent=2) if value else ""
        return str(value)

    def checked(self, config: dict[str, Any] | None) -> bool:
        return bool((config or {}).get(self.name, self.default))


def _widget(prop: dict[str, Any]) -> tuple[str, str]:
    types = [prop.get("type")] + [option.get("type") for option in prop.get("anyOf", [])]
    types = [kind for kind in types if kind and kind != "null"]
    kind = types[0] if types else "object"
    widget = _WIDGETS.get(kind, "json")
    if widget == "lines" and (prop.get("items") or {}).get("type") not in (None, "string"):
        widget = "json"
    return widget, "1" if kind == "integer" else "any"


def config_fields(connector_class) -> list[ConfigField]:
    """The connector's options in declaration order, each with its widget, help and default."""
    model = connector_class.Config
    properties = model.model_json_schema().get("properties", {})
    fields = []
    for name, info in model.model_fields.items():
        widget, step = _widget(properties.get(name, {}))
        required = info.is_required()
        fields.append(
            ConfigField(
                name=name,
                label=name.replace("_", " ").capitalize(),
                widget=widget,
                required=required,
                help=info.description or "",
                default=None if required else info.get_default(call_default_factory=True),
                step=step,
            )
        )
    return fields


def field_name(kind: str, name: str) -> str:
    """The form input's name for option ``name`` of a ``kind`` source."""
    return f"cfg.{kind}.{name}"


def _parse(field: ConfigField, text: str) -> Any:
    if field.widget == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if field.widget == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{field.name}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return text.strip()  # numbers stay text: the connector's model converts and checks them


def config_from_form(connector_class, kind: str, form: dict[str, str]) -> dict[str, Any]:
    """The config a form posted for a ``kind`` source: each filled option, parsed for its widget; an empty one is
    left to its default. A checkbox is sent only when ticked, so the form marks the options it showed."""
    config: dict[str, Any] = {}
    shown = form.get(f"cfg.{kind}._shown") == "1"
    for field in config_fields(connector_class):
        name = field_name(kind, field.name)
        if field.widget == "checkbox":
            if shown:
                config[field.name] = form.get(name) == "on"
            continue
        text = form.get(name, "")
        if text.strip():
            config[field.name] = _parse(field, text)
    return config
