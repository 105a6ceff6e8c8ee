"""The ``jiio`` command line: a Typer app whose commands share options and error handling."""
