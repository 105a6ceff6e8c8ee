"""The command-line reference (``docs/cli.md``), rendered from the Typer app itself.

Every command's usage line, arguments and options (names, type, default, help; also the
options that ``--help`` leaves out to stay short) are read from the Click command tree
that Typer builds, so the reference cannot drift from the code:
``tests/cli/test_cli_reference.py`` fails when the committed file differs from what
:func:`render_cli_reference` returns. The output is plain Markdown built without
Click's help formatter, so it does not depend on the terminal's width or colours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

import typer

__all__ = ["render_cli_reference"]

_DEFAULT_PANEL = "Options"
_HIDDEN_PANEL = "Options not shown by --help"


def render_cli_reference(app: typer.Typer, prog_name: str = "jiio") -> str:
    """Markdown reference of every command of ``app``, in the order they are registered.

    Args:
        app: the Typer application.
        prog_name: the program name shown in usage lines and headings.

    Returns:
        The whole document, ending in one newline.
    """
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name=prog_name)
    commands = [
        (name, command)
        for name, command in getattr(group, "commands", {}).items()
        if not command.hidden
    ]
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `jiio` command itself by `jiio_cli/cli/reference.py`; the test",
        "`tests/cli/test_cli_reference.py` fails when this file is out of date. Regenerate it",
        "with `JIIO_WRITE_CLI_REFERENCE=1 python -m pytest -q tests/cli/test_cli_reference.py`.",
        "",
        *_paragraphs(group.help),
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, command in commands:
        lines.append(f"| [`{prog_name} {name}`](#{prog_name}-{name}) | {_summary(command.help)} |")
    root_options = [p for p in group.params if _is_option(p) and not p.hidden]
    if root_options:
        lines += ["", f"`{prog_name}` itself takes:", ""]
        lines += _option_table(root_options, root)
    for name, command in commands:
        ctx = typer.Context(command, info_name=name, parent=root)
        lines += ["", *_command_section(command, ctx)]
    return "\n".join(lines) + "\n"


def _command_section(command: Any, ctx: Any) -> list[str]:
    """Heading, description, usage, arguments and options of one command."""
    visible = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in visible if not _is_option(p)]
    options = [p for p in visible if _is_option(p)]
    # Options kept out of --help to keep it short still work; the reference lists them.
    hidden = [p for p in command.params if _is_option(p) and getattr(p, "hidden", False)]
    usage = " ".join([ctx.command_path, "[OPTIONS]", *(_argument_usage(p) for p in arguments)])
    lines = [f"## {ctx.command_path}", "", *_paragraphs(command.help), "", f"    {usage}"]
    if arguments:
        lines += ["", "### Arguments", "", "| argument | type | required | description |"]
        lines.append("|---|---|---|---|")
        for param in arguments:
            required = "yes" if param.required else "no"
            kind = _cell(_type_label(param, ctx))
            lines.append(
                f"| `{_argument_name(param)}` | `{kind}` | {required} | {_cell(param.help)} |"
            )
    for panel, members in _by_panel(options):
        lines += ["", f"### {panel}", ""]
        lines += _option_table(members, ctx)
    if hidden:
        lines += ["", f"### {_HIDDEN_PANEL}", ""]
        lines += _option_table(hidden, ctx)
    return lines


def _option_table(options: Sequence[Any], ctx: Any) -> list[str]:
    """One Markdown table row per option: names, type, default, help."""
    rows = ["| option | type | default | description |", "|---|---|---|---|"]
    for param in options:
        names = ", ".join(f"`{name}`" for name in _option_names(param))
        default = _cell(_default_label(param))
        shown = f"`{default}`" if default else ""
        kind = _cell(_type_label(param, ctx))
        rows.append(f"| {names} | `{kind}` | {shown} | {_cell(param.help)} |")
    return rows


def _by_panel(options: Iterable[Any]) -> list[tuple[str, list[Any]]]:
    """Options grouped by their rich help panel, as ``--help`` shows them: options without
    one form the ``Options`` panel, first; the others follow in order of appearance."""
    panels: dict[str, list[Any]] = {_DEFAULT_PANEL: []}
    for param in options:
        panel = getattr(param, "rich_help_panel", None) or _DEFAULT_PANEL
        panels.setdefault(panel, []).append(param)
    return [(panel, members) for panel, members in panels.items() if members]


def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def _option_names(param: Any) -> list[str]:
    """Long names first, then short ones; a boolean's ``--no-x`` form after its ``--x``."""
    ordered = sorted(param.opts, key=lambda name: (not name.startswith("--"), name))
    return ordered + list(param.secondary_opts)


def _argument_name(param: Any) -> str:
    return (param.metavar or param.name or "").upper()


def _argument_usage(param: Any) -> str:
    name = _argument_name(param) + ("..." if param.nargs == -1 else "")
    return name if param.required else f"[{name}]"


def _type_label(param: Any, ctx: Any) -> str:
    """Typer's own type display (``<int>``, ``<linf|l2>``, ``<path>``); ``flag`` for
    options that take no value."""
    if getattr(param, "is_flag", False):
        return "flag"
    display = getattr(param, "display_type", None)
    if callable(display):
        return str(display(ctx))
    return f"<{param.type.name}>"


def _default_label(param: Any) -> str:
    """The default as a user types it; empty when there is none or it is not shown."""
    shown = getattr(param, "show_default", True)
    if isinstance(shown, str):
        return shown
    if shown is False or param.default is None:
        return ""
    if getattr(param, "is_flag", False):
        if param.secondary_opts:  # --x/--no-x: name the form that is in effect
            return _option_names(param)[0] if param.default else param.secondary_opts[0]
        return "on" if param.default else ""
    return _value_label(param.default)


def _value_label(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, list | tuple):
        return ",".join(_value_label(item) for item in value)
    return str(value)


def _paragraphs(text: str | None) -> list[str]:
    """A docstring as Markdown paragraphs: lines of one paragraph joined, paragraphs
    separated by a blank line (Click's ``\\b`` no-rewrap markers dropped)."""
    if not text:
        return []
    blocks = [" ".join(block.split()) for block in text.replace("\b", "").split("\n\n")]
    out: list[str] = []
    for block in filter(None, blocks):
        out += [block, ""]
    return out[:-1]


def _summary(text: str | None) -> str:
    """The first paragraph of a command's help, for the command table."""
    paragraphs = _paragraphs(text)
    return _cell(paragraphs[0]) if paragraphs else ""


def _cell(text: str | None) -> str:
    """Text fit for one Markdown table cell: one line, pipes escaped (GitHub's tables
    split cells at a bare pipe even inside a code span)."""
    return " ".join((text or "").split()).replace("|", "\\|")
