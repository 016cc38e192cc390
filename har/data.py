"""Data command line: `python -m har.data download|ensure wisdm|wisdm2019 [--data-dir D]` and `... info`.

`download` fetches the official archive, verifies it and unpacks it under the data root (see
`har.datasets.download`); `--archive FILE` installs an archive fetched by other means (offline
machines). `ensure` is what `make run` and `make test` call first: exit 0 at once (no network) when
the dataset is present, else one download attempt. `info` lists which datasets are present. The data
root is `--data-dir`, else `$HAR_DATA_DIR`, else `data/` in the project. User errors print one line
and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from har.datasets import arff, download, wisdm2019, wisdm_v11
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
    for device in ("phone", "watch"):
        try:
            files = wisdm2019.find_files(root, "accel", device)
            state = f"present  {len(files)} subject files in {files[0].parent}"
        except HarError:
            state = "missing"
        print(f"  {f'wisdm2019 {device} accel':24s} {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m har.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch, verify and unpack a dataset")
    get.add_argument("dataset", choices=sorted(download.URLS))
    get.add_argument("--archive", type=Path, help="install this local archive instead of downloading")
    get.add_argument("--force", action="store_true", help="download again even if the data is present")
    need = commands.add_parser("ensure", help="exit 0 if a dataset is present, else try to download it")
    need.add_argument("dataset", choices=sorted(download.URLS))
    show = commands.add_parser("info", help="list which datasets are present")
    for sub in (get, need, show):
        sub.add_argument("--data-dir", help="data root (default: $HAR_DATA_DIR, else ./data)")
    args = parser.parse_args(argv)
    try:
        root = data_root(args.data_dir)
        if args.command == "download":
            download.install(args.dataset, root, archive=args.archive, force=args.force)
        elif args.command == "ensure":
            download.ensure(args.dataset, root)
        else:
            _info(root)
    except HarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
