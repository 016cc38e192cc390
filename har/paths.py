"""Where data lives: `--data-dir` flag, else `$HAR_DATA_DIR`, else `data/` in the project.

The layout under the root mirrors `../shared/data`: `wisdm/`, `wisdm2019/phone_accel/`, ...
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "HAR_DATA_DIR"


def data_root(flag: str | os.PathLike | None = None) -> Path:
    """Resolve the data root by precedence: explicit flag, environment variable, project `data/`."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT / "data"


def missing_data_hint(dataset: str, root: str | os.PathLike | None = None) -> str:
    """The remedy every missing-data message ends with (one line): where to point, what to run.

    `dataset` is the `python -m har.data download` name (`wisdm` or `wisdm2019`); with `root`, the
    command installs into that root, so it can be pasted as is.
    """
    where = f" --data-dir {root}" if root is not None else ""
    return (f"point --data-dir or ${ENV_VAR} at a folder that has it, or run "
            f"`python -m har.data download {dataset}{where}` (offline: add --archive FILE)")


def cache_dir() -> Path:
    """Parsed-data cache; `$HAR_CACHE_DIR` overrides the project-local default."""
    return Path(os.environ.get("HAR_CACHE_DIR", PROJECT_ROOT / ".cache"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, fsync, then rename over it (never a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
