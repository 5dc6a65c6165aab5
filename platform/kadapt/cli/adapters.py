"""``kadapt adapters``: list a KB's adapters (``kadapt adapters KB``) and export them for vLLM."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, print_json, print_table


class _KbShorthand(TyperGroup):
    """``kadapt adapters KB`` is short for ``kadapt adapters list KB``."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_KbShorthand,
    help="A KB's adapters (`kadapt adapters KB` lists them) and their export for a vLLM multi-LoRA server.",
    no_args_is_help=True,
)


@app.command("list")
def list_(kb: Annotated[str, typer.Argument(help="The KB.")], json_output: JsonOption = False) -> None:
    """List the KB's adapters with their training stats; the active one is marked."""
    from kadapt.adapters import list_adapters
    from kadapt.kbs import get_kb
    from kadapt.views import AdapterView

    catalog = _context.catalog()
    kb_row = get_kb(catalog, kb)
    data = [AdapterView.of(row, kb_row).json_data() for row in list_adapters(catalog, kb)]
    if json_output:
        print_json(data)
        return
    print_table(
        None,
        ["id", "mode", "state", "snapshot", "examples", "steps", "final loss", "active"],
        [
            (
                d["id"],
                d["mode"],
                d["state"],
                d["snapshot_id"],
                d["stats"].get("examples", ""),
                d["stats"].get("steps", ""),
                d["stats"].get("final_loss", ""),
                "*" if d["active"] else "",
            )
            for d in data
        ],
    )


@app.command("export")
def export(
    kb: Annotated[
        list[str] | None,
        typer.Option("--kb", help="KB whose active adapter to export (repeatable); default every KB served by one."),
    ] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Export directory; default <data dir>/vllm-adapters.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Write the active adapters in the layout vLLM loads (DIR/<kb>/, DIR/lora-modules.json) and print the
    `vllm serve` command that serves them, each under its KB's name.

    Without --kb, folders of KBs that no longer serve an adapter are removed. Re-running changes nothing that
    is already up to date."""
    from kadapt.activation import export_active_adapters
    from kadapt.lora_server import vllm_commands

    result = export_active_adapters(_context.catalog(), kb or None, to, _context.settings())
    if json_output:
        print_json(result.as_dict())
        return
    if result.exported:
        print_table(
            None,
            ["KB", "adapter", "mode", "rank", "base model", "path", "updated"],
            [
                (row.kb, row.adapter, row.mode, row.rank, row.base_model, row.path, "yes" if row.changed else "")
                for row in result.exported
            ],
        )
    else:
        console.print("No KB is served from an adapter; nothing to export.")
    for slug in result.removed:
        console.print(f"removed {slug}: the KB no longer serves an adapter")
    commands = vllm_commands(result.directory)
    if commands:
        console.print(f"Serve them with vLLM ({Path(result.directory) / 'lora-modules.json'} lists them as JSON):")
        for command in commands:
            typer.echo(shlex.join(command))  # plain echo: rich would wrap a long command line


@app.command("forgetting")
def forgetting(
    kb: Annotated[str, typer.Argument(help="The KB whose adapter to measure.")],
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="Adapter id; default the adapter the KB serves from.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Ask general questions the base model answers with and without the adapter (through the serving path)
    and show what the adapter costs: base and adapter accuracy and the relative drop."""
    from kadapt.forgetting import measure_forgetting

    result = measure_forgetting(_context.catalog(), _context.store(), kb, adapter_id=adapter)
    if json_output:
        print_json(result.to_dict())
        return
    print_table(
        None,
        ["question", "base", "served", "answered by", "served answer"],
        [
            (
                item["question"],
                "right" if item["base_correct"] else "wrong",
                "right" if item["adapter_correct"] else "wrong",
                "base model (routed)" if item.get("routed_to_base") else "adapter",
                " ".join(item["adapter_answer"].split())[:80],
            )
            for item in result.answers
        ],
    )
    console.print(
        f"adapter {result.adapter_id}: {result.questions} general questions, base {result.base_accuracy:.2f}, "
        f"served with the adapter {result.adapter_accuracy:.2f} ({result.routed_to_base} routed to the base model), "
        f"relative drop {result.relative_drop:.1%}; the adapter answering all of them: "
        f"{result.adapter_alone_accuracy:.2f}, drop {result.adapter_alone_drop:.1%}"
    )
