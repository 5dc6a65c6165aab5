"""``kadapt source``: register, list and remove the sources a KB's documents come from."""

from __future__ import annotations

import json
import typing
from typing import Annotated, Any

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, print_json, print_table
from kadapt.errors import InvalidInput
from kadapt.views import SourceView

app = typer.Typer(help="Add, list and remove a KB's document sources.", no_args_is_help=True)


def _is_list_field(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(arg) is list for arg in typing.get_args(annotation))


def _is_dict_field(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or any(
        typing.get_origin(a) is dict for a in typing.get_args(annotation)
    )


def _json_object(name: str, value: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise InvalidInput(f'--{name} takes a JSON object such as \'{{"a": "b"}}\': {exc}') from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f'--{name} takes a JSON object such as \'{{"a": "b"}}\'')
    return parsed


def parse_connector_options(args: list[str], config_model) -> dict[str, Any]:
    """Turn ``--path DIR --include '*.md' --include '*.txt' --hidden`` into a config dict (an option whose field is
    a mapping, such as ``--group-map '{"confluence-hr": "hr"}'``, takes a JSON object)."""
    fields = config_model.model_fields
    config: dict[str, Any] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--") or token == "--":
            raise InvalidInput(f"unexpected argument {token!r}; connector options look like --name value")
        name, _, value = token[2:].partition("=")
        key = name.replace("-", "_")
        negated = False
        if key not in fields and key.startswith("no_") and key[3:] in fields:
            key, negated = key[3:], True
        if key not in fields:
            raise InvalidInput(
                f"unknown option --{name} for this connector; options: "
                + ", ".join(f"--{field.replace('_', '-')}" for field in fields)
            )
        if not value and not negated:
            if index + 1 < len(args) and not args[index + 1].startswith("--"):
                index += 1
                value = args[index]
            else:
                value = "true"
        parsed: Any = "false" if negated else value
        if _is_dict_field(fields[key].annotation):
            parsed = _json_object(name, value)
        if _is_list_field(fields[key].annotation):
            config.setdefault(key, []).append(parsed)
        else:
            config[key] = parsed
        index += 1
    return config


@app.command(
    "add",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Connector options depend on KIND; `kadapt source kinds` lists them. Examples:\n\n"
    "kadapt source add handbook files --path ./docs --include '*.md' --exclude 'drafts/'\n\n"
    "kadapt source add handbook git --url https://example.com/wiki.git --ref main\n\n"
    "kadapt source add handbook web --url https://intranet.example.com/ --max-pages 200\n\n"
    "kadapt source add handbook s3 --bucket company-docs --prefix handbook/\n\n"
    "kadapt source add wiki confluence --url https://example.atlassian.net/wiki --space HR --permissions "
    '--group-map \'{"confluence-hr": "hr"}\'',
)
def add(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="The KB to add the source to.")],
    kind: Annotated[str, typer.Argument(help="Connector kind: files, git, web, or one a plugin adds.")],
    config_json: Annotated[str | None, typer.Option("--config", help="Connector config as a JSON object.")] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="Sync it on a schedule: a cron expression ('0 3 * * *': 03:00 UTC daily) or '@hourly'."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Add a source to a KB. Options after KIND configure the connector (see `kadapt source kinds`)."""
    from kadapt.connectors import get_connector_class
    from kadapt.kbs import add_source

    connector_class = get_connector_class(kind)
    config: dict[str, Any] = {}
    if config_json:
        try:
            config = json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise InvalidInput("--config must be a JSON object")
    config |= parse_connector_options(list(ctx.args), connector_class.Config)
    source = add_source(_context.catalog(), _context.settings(), kb, kind, config, schedule=schedule)
    if json_output:
        print_json(SourceView.of(source).json_data())
    else:
        console.print(f"Added {kind} source [bold]{source.id}[/bold] to {kb}. Next: kadapt sync {kb}")
        if source.schedule:
            console.print(f"Scheduled: {source.schedule} (UTC), next sync {source.next_sync_at:%Y-%m-%d %H:%M} UTC.")


@app.command("edit")
def edit(
    source_id: Annotated[int, typer.Argument(help="Source id, from `kadapt source list`.")],
    schedule: Annotated[
        str,
        typer.Option(
            help="Sync schedule: a cron expression ('*/30 * * * *', '0 3 * * 1-5'), '@daily', or '' for none.",
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Change a source's sync schedule. `kadapt serve` runs schedules (or `kadapt schedule run` from cron)."""
    from kadapt.kbs import set_schedule

    source = set_schedule(_context.catalog(), source_id, schedule)
    if json_output:
        print_json(SourceView.of(source).json_data())
    elif source.schedule:
        console.print(
            f"Source {source_id} syncs on {source.schedule} (UTC); next at {source.next_sync_at:%Y-%m-%d %H:%M} UTC."
        )
    else:
        console.print(f"Source {source_id} has no schedule; it syncs when asked (kadapt sync).")


@app.command("list")
def list_(
    kb: Annotated[str | None, typer.Argument(help="Only this KB's sources.")] = None, json_output: JsonOption = False
) -> None:
    """List sources, with their configuration and last sync."""
    from kadapt.kbs import list_kbs, list_sources

    catalog = _context.catalog()
    sources = list_sources(catalog, kb)
    if json_output:
        print_json([SourceView.of(source).json_data() for source in sources])
        return
    slugs = {item.id: item.slug for item in list_kbs(catalog)}
    print_table(
        None,
        ["id", "KB", "kind", "config", "schedule", "next sync", "last sync"],
        [
            (
                s.id,
                slugs.get(s.kb_id),
                s.kind,
                json.dumps(s.config),
                s.schedule or "-",
                f"{s.next_sync_at:%Y-%m-%d %H:%M}" if s.next_sync_at else "-",
                s.last_sync_at or "never",
            )
            for s in sources
        ],
    )


@app.command("remove")
def remove(
    source_id: Annotated[int, typer.Argument(help="Source id, from `kadapt source list`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a source with its documents and their vectors."""
    from kadapt.sync import remove_source

    if not yes:
        typer.confirm(f"Remove source {source_id} and its documents?", abort=True)
    remove_source(_context.catalog(), _context.store(), source_id)
    console.print(f"Removed source {source_id}.")


@app.command("kinds")
def kinds(json_output: JsonOption = False) -> None:
    """List connector kinds and their options."""
    from kadapt.plugins import get_plugins

    data = []
    for kind, connector_class in sorted(get_plugins().connectors().items()):
        options = [
            {
                "option": "--" + name.replace("_", "-"),
                "required": field.is_required(),
                "default": None if field.is_required() else field.get_default(call_default_factory=True),
                "help": field.description or "",
            }
            for name, field in connector_class.Config.model_fields.items()
        ]
        data.append({"kind": kind, "description": connector_class.description, "options": options})
    if json_output:
        print_json(data)
        return
    for item in data:
        print_table(
            f"{item['kind']}: {item['description']}",
            ["option", "required", "default", "help"],
            [(o["option"], "yes" if o["required"] else "", o["default"], o["help"]) for o in item["options"]],
        )
