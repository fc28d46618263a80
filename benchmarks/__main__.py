"""Run every benchmark module and print one JSON object per result."""

from __future__ import annotations

import importlib
import json
import sys

MODULES = ["benchmarks.engine", "benchmarks.balloon", "benchmarks.web_render",
           "benchmarks.web_load", "benchmarks.classroom"]


def main(argv: list[str]) -> int:
    wanted = [m for m in MODULES if not argv or any(a in m for a in argv)]
    failed = 0
    for name in wanted:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(json.dumps({"bench": name, "skipped": str(exc)}), flush=True)
            continue
        for row in module.run():
            print(json.dumps(row), flush=True)
            failed += row.get("ok") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
