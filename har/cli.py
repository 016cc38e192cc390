"""Shared CLI plumbing: `run_main` turns domain errors into exit code 2 and one readable line."""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from typing import Callable

from har.errors import HarError
from har.paths import PROJECT_ROOT


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


def _git(cwd, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(cwd=PROJECT_ROOT, short: bool = False) -> str:
    """HEAD of the checkout the code runs from ("unknown" outside git), "+dirty" when tracked files
    differ from it (untracked files do not count); stamps every report."""
    head = _git(cwd, "rev-parse", *(["--short=10"] if short else []), "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if _git(cwd, "status", "--porcelain", "--untracked-files=no") else "")


def command_line(prog: str, build: Callable[[], argparse.ArgumentParser], args: argparse.Namespace) -> str:
    """`python -m prog` with every option that differs from its default: the command that reruns `args`."""
    defaults = vars(build().parse_args([]))
    parts = [f"python -m {prog}"]
    for action in build()._actions:
        name = action.dest
        if not action.option_strings or name == "help" or getattr(args, name) == defaults.get(name):
            continue
        flag = action.option_strings[-1]
        value = getattr(args, name)
        parts.append(flag if isinstance(value, bool) else f"{flag} {value}")
    return " ".join(parts)
