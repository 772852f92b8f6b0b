"""Writes the memory table into experiments/README.md from results/memory.json (never by hand).

    python experiments/render_memory.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def table(record: dict) -> str:
    rows = ["| command | peak_rss_mb | within 2,560 MB | wall_seconds |", "|---|---|---|---|"]
    for name, r in record["commands"].items():
        rows.append(f"| `{r['command']}` ({name}) | {r['peak_rss_mb']:,.0f} | "
                    f"{'yes' if r['peak_rss_mb'] <= record['target_mb'] else '**no**'} | {r['wall_seconds']:.0f} |")
    m = record["machine"]
    rows.append(f"\nMeasured at commit {record['commit'][:12]}{' (dirty tree)' if record['dirty'] else ''}, "
                f"{record['date']}, {m['cpu']}, {m['cores']} cores, {m['memory_mb']:,} MB.")
    return "\n".join(rows)


def main() -> None:
    record = json.loads((HERE / "results" / "memory.json").read_text())
    readme = HERE / "README.md"
    text = readme.read_text()
    block = f"<!-- memory table -->\n{table(record)}\n<!-- end memory table -->"
    text = re.sub(r"<!-- memory table -->.*?<!-- end memory table -->", lambda _: block, text, count=1, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
