"""The ``kadapt`` command line (typer + rich).

Exit codes: 0 success, 1 user error (one clear line, no traceback), 2 usage error.
"""

from __future__ import annotations

import sys

import typer

from kadapt.errors import KadaptError

__all__ = ["build_app", "main"]


def build_app() -> typer.Typer:
    from kadapt.cli import adapt, adapters, audit, decide, jobs, kb, keys, ops, serve, source

    app = typer.Typer(
        name="kadapt",
        help="Adapt a language model to your company's knowledge bases: ingest sources, search, adapt, serve.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.add_typer(kb.app, name="kb")
    app.add_typer(source.app, name="source")
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(keys.app, name="keys")
    app.add_typer(adapters.app, name="adapters")
    ops.register(app)
    serve.register(app)
    adapt.register(app)
    decide.register(app, kb.app)
    audit.register(app)
    from kadapt.plugins import get_plugins

    get_plugins().pm.hook.register_commands(cli=app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kadapt`` script."""
    from kadapt.cli.audit import audit_commands

    command = typer.main.get_command(build_app())
    audit_commands(command)  # state-changing commands land in the audit log
    try:
        command.main(args=argv, prog_name="kadapt", standalone_mode=False)
    except KadaptError as exc:
        from kadapt.cli._output import err_console

        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument (exit code 2)
        if hasattr(exc, "show"):
            exc.show()
        else:
            print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
