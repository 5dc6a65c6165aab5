"""``kadapt kb``: create, list, show and delete knowledge bases."""

from __future__ import annotations

from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, print_json, print_table
from kadapt.views import KBView, SourceView

app = typer.Typer(help="Create, list, show and delete knowledge bases (KBs).", no_args_is_help=True)


def _groups(value: str | None) -> list[str]:
    return [group.strip() for group in (value or "").split(",") if group.strip()]


@app.command("create")
def create(
    slug: Annotated[str, typer.Argument(help="Short name of the KB, e.g. 'hr-policies'.")],
    title: Annotated[str, typer.Option(help="Human-readable title.")] = "",
    model: Annotated[
        str | None, typer.Option(help="Base model, one of KADAPT_ALLOWED_MODELS; default KADAPT_DEFAULT_MODEL.")
    ] = None,
    readers: Annotated[str | None, typer.Option(help="Comma-separated groups that may read the KB.")] = None,
    owners: Annotated[str | None, typer.Option(help="Comma-separated groups that own the KB.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an empty KB; add sources to it with `kadapt source add`."""
    from kadapt.kbs import create_kb

    kb = create_kb(
        _context.catalog(),
        slug,
        title=title,
        base_model=model,
        reader_groups=_groups(readers),
        owner_groups=_groups(owners),
        settings=_context.settings(),
    )
    if json_output:
        print_json(KBView.of(kb).json_data())
    else:
        console.print(f"Created KB [bold]{kb.slug}[/bold]. Next: kadapt source add {kb.slug} files --path DIR")


@app.command("list")
def list_(json_output: JsonOption = False) -> None:
    """List the KBs."""
    from kadapt.kbs import list_kbs

    kbs = list_kbs(_context.catalog())
    if json_output:
        print_json([KBView.of(kb).json_data() for kb in kbs])
        return
    if not kbs:
        console.print("No KBs yet. Create one with: kadapt kb create NAME")
        return
    print_table(
        None,
        ["KB", "title", "mode", "model", "readers"],
        [(kb.slug, kb.title, kb.active_mode, kb.base_model, ",".join(kb.reader_groups)) for kb in kbs],
    )


@app.command("show")
def show(slug: Annotated[str, typer.Argument(help="The KB.")], json_output: JsonOption = False) -> None:
    """Show a KB's settings and sources."""
    from kadapt.kbs import get_kb, list_sources

    catalog = _context.catalog()
    kb = get_kb(catalog, slug)
    sources = list_sources(catalog, slug)
    data = KBView.of(kb).json_data() | {"sources": [SourceView.of(source).json_data() for source in sources]}
    if json_output:
        print_json(data)
        return
    for key in ("slug", "title", "base_model", "policy", "active_mode", "reader_groups", "owner_groups"):
        console.print(f"[bold]{key}[/bold]: {data[key]}")
    print_table(
        "sources",
        ["id", "kind", "config", "last sync"],
        [(s["id"], s["kind"], s["config"], s["last_sync_at"] or "never") for s in data["sources"]],
    )


@app.command("delete")
def delete(
    slug: Annotated[str, typer.Argument(help="The KB.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a KB with its sources, documents and vectors."""
    from kadapt.kbs import delete_kb, get_kb

    catalog = _context.catalog()
    get_kb(catalog, slug)
    if not yes:
        typer.confirm(f"Delete KB {slug!r} with all its documents?", abort=True)
    delete_kb(catalog, _context.store(), slug, _context.settings())
    console.print(f"Deleted KB {slug}.")


@app.command("set-mode")
def set_mode(
    slug: Annotated[str, typer.Argument(help="The KB.")],
    mode: Annotated[str, typer.Argument(help="icl, ft, aug-ft or aug-ft+rag.")],
    adapter: Annotated[str | None, typer.Option(help="Adapter id; default the newest ready one of that mode.")] = None,
) -> None:
    """Choose how the KB is served: documents in the prompt (icl), an adapter (ft, aug-ft) or the aug-ft adapter
    with the documents in the prompt (aug-ft+rag)."""
    from kadapt.activation import set_mode as set_kb_mode

    kb = set_kb_mode(_context.catalog(), slug, mode, adapter)
    suffix = f" with adapter {kb.active_adapter}" if kb.active_adapter else ""
    console.print(f"KB {slug} is now served in {kb.active_mode} mode{suffix}.")
