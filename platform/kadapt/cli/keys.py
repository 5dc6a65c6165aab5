"""``kadapt keys``: API keys for the chat endpoint and the admin API."""

from __future__ import annotations

from typing import Annotated

import typer

from kadapt.cli import _context
from kadapt.cli._output import JsonOption, console, err_console, print_json, print_table

app = typer.Typer(help="Create, list and revoke API keys (stored hashed; a key is shown once).", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[str, typer.Option(help="admin, editor or reader.")] = "reader",
    groups: Annotated[str, typer.Option(help="Comma-separated groups, matched against KB reader/owner groups.")] = "",
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "",
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Expire after this long: e.g. 30d, 12h, 2w.")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Expire at the start of this day (UTC), YYYY-MM-DD.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a key and print it once; only its hash is stored. Without --expires-in/--expires it never expires."""
    from kadapt.auth import create_key, parse_expiry
    from kadapt.errors import InvalidInput

    if expires_in is not None and expires is not None:
        raise InvalidInput("give --expires-in or --expires, not both")
    expires_at = parse_expiry(expires_in if expires_in is not None else expires)
    group_list = [group.strip() for group in groups.split(",") if group.strip()]
    key, row = create_key(
        _context.catalog(), _context.settings(), role=role, groups=group_list, name=name, expires_at=expires_at
    )
    if json_output:
        print_json(
            {
                "id": row.id,
                "key": key,
                "role": row.role,
                "groups": row.groups,
                "name": row.name,
                "expires_at": row.expires_at,
            }
        )
        return
    until = f", expiring {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
    err_console.print(f"Created {row.role} key {row.id} for groups {row.groups or '[]'}{until}; it is shown only now:")
    typer.echo(key)


@app.command("list")
def list_(json_output: JsonOption = False) -> None:
    """List keys (never the keys themselves)."""
    from kadapt.auth import key_expired, list_keys

    rows = list_keys(_context.catalog())
    data = [
        {
            "id": r.id,
            "prefix": r.prefix,
            "name": r.name,
            "role": r.role,
            "groups": r.groups,
            "created_at": r.created_at,
            "last_used_at": r.last_used_at,
            "revoked_at": r.revoked_at,
            "expires_at": r.expires_at,
            "expired": key_expired(r),
        }
        for r in rows
    ]
    if json_output:
        print_json(data)
        return
    print_table(
        None,
        ["id", "prefix", "name", "role", "groups", "last used", "revoked", "expires"],
        [
            (
                d["id"],
                d["prefix"],
                d["name"],
                d["role"],
                ",".join(d["groups"]),
                d["last_used_at"] or "never",
                d["revoked_at"] or "",
                f"{d['expires_at']:%Y-%m-%d %H:%M}{' (expired)' if d['expired'] else ''}"
                if d["expires_at"]
                else "never",
            )
            for d in data
        ],
    )


@app.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="Key id, from `kadapt keys list`.")]) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    from kadapt.auth import revoke_key

    row = revoke_key(_context.catalog(), key_id)
    console.print(f"Revoked key {row.id}.")
