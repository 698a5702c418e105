"""How the command line is read and shown.

One rule for every command that runs something in an agent (``start``, ``run``, ``exec``):
bottle's options may come anywhere before ``--``, and every word after ``--`` is the
agent's, never read by bottle. A word bottle does not know before ``--`` is an error, so a
misplaced option can never start the wrong bottle or reach the agent by accident.

Help pages name arguments the way docker and gh do (``AGENT``, ``--bottle NAME``), not by
Python type.
"""

from __future__ import annotations

from typing import Any

from typer._click.core import Context, Parameter
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

#: Said in every such command's help, and in the hint of a usage error.
RULE = "Bottle's options go anywhere before --; every word after -- is the agent's."


class AgentCommand(TyperCommand):
    """A command whose last, variadic argument is the words after ``--``."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        head, tail = _split(args)
        rest = super().parse_args(ctx, head)
        name = self._tail().name
        assert name is not None
        if ctx.params.get(name) and not ctx.resilient_parsing:
            word = ctx.params[name][0]
            ctx.fail(f"unexpected argument {word!r} before --")
        ctx.params[name] = tail
        return rest

    def _tail(self) -> Parameter:
        return next(p for p in reversed(self.params) if isinstance(p, TyperArgument))

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [*pieces[:-1], "--", pieces[-1]]


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in args:
        return list(args), []
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


class _Argument(TyperArgument):
    """``AGENT`` / ``[AGENT]`` / ``CMD...``: the name, never its Python type."""

    def _upper(self) -> str:
        return self.metavar or (self.name or "").upper()

    def _rich_display_name(self) -> str:
        return self._upper() + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self._upper() if self.required else f"[{self._upper()}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Context) -> str | None:
        return None


class _Option(TyperOption):
    """``--bottle NAME``: a value's name, never its Python type."""

    def display_type_rich(self, ctx: Context) -> str:
        if self.type_descriptor.is_choice:
            return super().display_type_rich(ctx) or ""
        return self.metavar or (self.name or "").upper()


def styled(command: Any) -> Any:
    """``command`` (and every subcommand) with help pages in docker's style."""
    for param in command.params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            styled(sub)
    return command


def parse(command: Any, argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse ``argv`` as the command line would, run nothing: (command path, its params).

    Raises the parser's usage error (what ``bottle`` would print) on a wrong line.
    """
    ctx = command.make_context("bottle", list(argv))
    path = ["bottle"]
    while isinstance(command, TyperGroup):
        args = [*ctx._protected_args, *ctx.args]
        if not args:
            break
        name, command, rest = command.resolve_command(ctx, args)
        path.append(name or "")
        ctx = command.make_context(name, rest, parent=ctx)
    return path, dict(ctx.params)
