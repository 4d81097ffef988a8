"""``python -m lpca_envs.code build-tables {repair,humaneval} [docker|bwrap|process]``: rebuild a table."""

from __future__ import annotations

import sys

from lpca_envs.code.sandbox import open_sandbox
from lpca_envs.code.tables import build_table, write_table


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "build-tables" or argv[2] not in ("repair", "humaneval"):
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[2]
    if name == "repair":
        from lpca_envs.code.repair import repair_sources

        sources, per_level = repair_sources(), 12
    else:
        from lpca_envs.code.humaneval import humaneval_sources

        sources, per_level = humaneval_sources(), 4
    with open_sandbox(argv[3] if len(argv) > 3 else None) as sb:
        table = build_table(name, sources, sb, per_level)
    path = write_table(name, table)
    n = sum(len(p["variants"]) for p in table["problems"].values())
    print(f"wrote {path}: {len(table['problems'])} problems, {n} variants")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
