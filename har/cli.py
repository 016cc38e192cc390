"""Shared CLI plumbing: `run_main` turns domain errors into exit code 2 and one readable line."""
from __future__ import annotations

import argparse
import platform
import sys
from typing import Callable

from har.errors import HarError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints usage first)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def run_cli(build: Callable[[], argparse.ArgumentParser], body: Callable[[argparse.Namespace], int],
            argv: list[str] | None) -> int:
    """Parse `argv` and run `body(args)`; every user error becomes exit code 2 and one stderr line."""
    try:
        args = build().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2, already printed)
        return int(exc.code or 0)
    return run_main(lambda: body(args))


def run_main(body: Callable[[], int]) -> int:
    try:
        return body()
    except HarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def versions() -> dict[str, str]:
    import numpy
    import sklearn
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__}
