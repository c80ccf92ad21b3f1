"""The command lines: each module's ``main(argv) -> int`` is a console script and a top-level ``*.py`` shim."""
