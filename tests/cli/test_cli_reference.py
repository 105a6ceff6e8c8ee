"""``docs/cli.md`` is the reference that ``jiio_cli.cli.reference`` renders from the Typer
app, and that rendering says what ``jiio <command> --help`` says.

Regenerate the file with
``JIIO_WRITE_CLI_REFERENCE=1 python -m pytest -q tests/cli/test_cli_reference.py``.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.cli.reference import render_cli_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMANDS = ("train", "reconstruct", "attack", "adapt", "sample", "bench")


class Colour(str, enum.Enum):
    """A choice option's values, for the tiny app below."""

    red = "red"
    blue = "blue"


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_cli_reference(app)


def test_cli_reference_is_up_to_date(rendered: str) -> None:
    if os.environ.get("JIIO_WRITE_CLI_REFERENCE"):
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(rendered, encoding="utf-8")
    assert REFERENCE.read_text(encoding="utf-8") == rendered, (
        "docs/cli.md is stale; regenerate it with "
        "JIIO_WRITE_CLI_REFERENCE=1 python -m pytest -q tests/cli/test_cli_reference.py"
    )


def _section(text: str, command: str) -> str:
    match = re.search(rf"^## jiio {command}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section for jiio {command}"
    return match.group(1)


def _section_of(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_help_is_in_the_reference(rendered: str, command: str) -> None:
    """Each option name that ``--help`` prints appears in the command's own section,
    as a table row of its own."""
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "300", "TERM": "dumb"})
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    in_help = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.output)) - {"--help"}
    assert in_help, result.output
    rows = [line for line in _section(rendered, command).splitlines() if line.startswith("| `-")]
    in_reference = {name for row in rows for name in re.findall(r"`(--[a-z][a-z0-9-]*)`", row)}
    assert in_help <= in_reference, sorted(in_help - in_reference)


def test_defaults_types_and_panels_come_from_the_parameters() -> None:
    """A tiny app whose every parameter kind is known: the rows carry its names, types,
    defaults (enum values, paths, --x/--no-x forms) and help, hidden options in a table of
    their own at the end, the
    rich help panels become tables of their own after the unpanelled ``Options`` (as
    ``--help`` orders them, whatever the parameters' order)."""
    demo = typer.Typer(help="Demo tool.")

    @demo.command()
    def paint(
        images: list[Path] = typer.Argument(..., help="Pictures | to paint."),
        coats: int = typer.Option(2, help="Coats.", rich_help_panel="Finish"),
        colour: Colour = typer.Option(Colour.blue, help="Paint colour."),
        out: Path = typer.Option(Path("out") / "p.png", "--out", "-o", help="Where."),
        gloss: bool = typer.Option(True, "--gloss/--matt", help="Surface."),
        dry: bool = typer.Option(False, "--dry", help="Dry run."),
        secret: int = typer.Option(7, hidden=True, help="Rarely needed."),
        note: str = typer.Option(None, help="Optional note."),
    ) -> None:
        """Paint pictures.

        Second paragraph,
        wrapped.
        """

    @demo.command()
    def clean() -> None:
        """Clean up."""

    text = render_cli_reference(demo, prog_name="demo")
    section = _section_of(text, "demo paint")
    assert "    demo paint [OPTIONS] IMAGES..." in text
    assert "Paint pictures.\n\nSecond paragraph, wrapped." in text
    assert "| [`demo paint`](#demo-paint) | Paint pictures. |" in text
    assert "| `IMAGES` | `<list[Path]>` | yes | Pictures \\| to paint. |" in text
    assert "| `--colour` | `<red\\|blue>` | `blue` | Paint colour. |" in text
    assert "| `--out`, `-o` | `<path>` | `out/p.png` | Where. |" in text
    assert "| `--gloss`, `--matt` | `flag` | `--gloss` | Surface. |" in text
    assert "| `--dry` | `flag` |  | Dry run. |" in text
    assert "| `--note` | `<str>` |  | Optional note. |" in text
    shown, hidden = section.split("### Options not shown by --help")
    assert "| `--secret` | `<int>` | `7` | Rarely needed. |" in hidden
    assert "secret" not in shown
    options, finish = shown.split("### Finish")
    assert "`--coats`" in finish and "`--coats`" not in options
    assert "`--colour`" in options and "`--colour`" not in finish
    assert options.index("### Arguments") < options.index("### Options")
    assert "## demo clean" in text


def test_the_rendering_ignores_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Click's help formatter wraps to the terminal; the reference must not."""
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render_cli_reference(app)
    monkeypatch.setenv("COLUMNS", "250")
    assert render_cli_reference(app) == narrow
