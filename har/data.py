"""Data command line: `python -m har.data download wisdm|wisdm2019 [--data-dir D]` and `... info`.

`download` fetches the official archive, verifies it and unpacks it under the data root (see
`har.datasets.download`); `--archive FILE` installs an archive fetched by other means (offline
machines). `info` lists which datasets are present. The data root is `--data-dir`, else
`$HAR_DATA_DIR`, else `data/` in the project. User errors print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from har.datasets import arff, download, wisdm_v11
from har.errors import HarError
from har.paths import data_root


def _info(root: Path) -> None:
    print(f"data root: {root}")
    for label, finder in (("wisdm raw (v1.1)", wisdm_v11.find_raw_file),
                          ("wisdm features (ARFF)", arff.find_features_file)):
        try:
            print(f"  {label:24s} present  {finder(root)}")
        except HarError:
            print(f"  {label:24s} missing")
    accel = root / "wisdm2019" / "phone_accel"
    n_files = len(list(accel.glob("data_*_accel_phone.txt*"))) if accel.is_dir() else 0
    state = f"present  {n_files} subject files in {accel}" if n_files else "missing"
    print(f"  {'wisdm2019 phone accel':24s} {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m har.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch, verify and unpack a dataset")
    get.add_argument("dataset", choices=sorted(download.URLS))
    get.add_argument("--archive", type=Path, help="install this local archive instead of downloading")
    get.add_argument("--force", action="store_true", help="download again even if the data is present")
    show = commands.add_parser("info", help="list which datasets are present")
    for sub in (get, show):
        sub.add_argument("--data-dir", help="data root (default: $HAR_DATA_DIR, else ./data)")
    args = parser.parse_args(argv)
    try:
        root = data_root(args.data_dir)
        if args.command == "download":
            download.install(args.dataset, root, archive=args.archive, force=args.force)
        else:
            _info(root)
    except HarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
