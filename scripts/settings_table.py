"""Print, check or rewrite the settings table of README.md from the settings classes.

.venv/bin/python scripts/settings_table.py           # print the table
.venv/bin/python scripts/settings_table.py --write   # rewrite it in README.md
.venv/bin/python scripts/settings_table.py --check   # exit 1 when README.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zehanx_cli.settings_doc import markdown, replace_in

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    mode.add_argument("--check", action="store_true", help="fail when README.md's table is stale")
    args = parser.parse_args()
    if not (args.write or args.check):
        sys.stdout.write(markdown())
        return 0
    current = README.read_text()
    wanted = replace_in(current)
    if args.check:
        if current != wanted:
            print("README.md settings table is stale: run scripts/settings_table.py --write", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
