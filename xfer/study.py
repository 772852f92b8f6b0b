"""Studies: the commands behind every committed figure, as named objects.

    python -m xfer.study list
    python -m xfer.study run <name> [-- extra arguments for its command]
    python -m xfer.study report <name>
    python -m xfer.study diff <name> <commit | json> [<commit | json>]

A study is an entry of ``experiments/studies.yaml`` (in the project root, the working
directory unless ``--root``): what it measures, the command that runs it from nothing into
its own temporary store, the results JSON that command writes (provenance and figures), the
markdown page generated from that JSON and the command that regenerates the page without
running again; after it ``experiments/render_results.py`` regenerates the READMEs' tables from
every recorded JSON. ``diff`` prints one study's table from two recorded versions of its JSON (a
git commit, or a JSON file; the second defaults to the working tree) side by side, with the
differences, so the effect of a change is one command away.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError, cli_main

REGISTRY = Path("experiments") / "studies.yaml"
#: regenerates every table of the READMEs from the recorded JSON (run after a study's own report)
RENDER = Path("experiments") / "render_results.py"


def load_studies(root: Path) -> dict[str, dict]:
    import yaml

    path = root / REGISTRY
    if not path.is_file():
        raise ConfigError(f"{path}: no study registry here (run from the project root or pass --root)")
    studies = yaml.safe_load(path.read_text()) or {}
    for name, study in studies.items():
        for key in ("measures", "command", "results"):
            if key not in study:
                raise ConfigError(f"{path}: study {name}: missing {key}")
    return studies


def study(studies: Mapping[str, dict], name: str) -> dict:
    if name not in studies:
        raise ConfigError(f"study {name!r}: unknown (one of {', '.join(studies)})")
    return studies[name]


def _argv(command: str, extra: Sequence[str] = ()) -> list[str]:
    """A registry command as argv, ``python`` being this interpreter."""
    argv = shlex.split(command)
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:], *extra]


def run(root: Path, spec: Mapping, extra: Sequence[str], out_dir: str | None = None) -> int:
    """Run the study's command, then its report; ``out_dir`` (for studies that take ``--out-dir``)
    puts the JSON and page there instead of ``experiments/``."""
    where = ["--out-dir", str(Path(out_dir).resolve())] if out_dir else []
    cmd = _argv(spec["command"], [*where, *extra])
    print("$ " + " ".join(["python", *cmd[1:]]), flush=True)
    code = subprocess.call(cmd, cwd=root)
    return report(root, spec, out_dir) if code == 0 else code


def report(root: Path, spec: Mapping, out_dir: str | None = None) -> int:
    """The study's own page (``report``, into ``out_dir`` if given), then, for the project's own
    results, the READMEs' generated tables."""
    if spec.get("report"):
        where = ["--out-dir", str(Path(out_dir).resolve())] if out_dir else []
        code = subprocess.call(_argv(spec["report"], where), cwd=root)
        if code:
            return code
    if out_dir is None and (root / RENDER).is_file() and spec.get("report") != f"python {RENDER}":
        return subprocess.call(_argv(f"python {RENDER}"), cwd=root)
    return 0


def read_version(root: Path, results: str, ref: str | None) -> tuple[dict, str]:
    """A study's results JSON from a file, a git commit, or (None) the working tree."""
    if ref is None:
        path = root / results
        return json.loads(path.read_text()), "working tree"
    if Path(ref).is_file():
        return json.loads(Path(ref).read_text()), ref
    proc = subprocess.run(["git", "show", f"{ref}:{results}"], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise ConfigError(f"{ref}: neither a JSON file nor a commit that has {results}")
    return json.loads(proc.stdout), ref


def table_rows(record: Mapping, spec: Mapping) -> dict[str, dict[str, Any]]:
    """Row name -> figures, as the study's ``table`` says to read them."""
    rows = record.get(spec["rows"])
    if rows is None:
        return {}
    if isinstance(rows, Mapping):
        items = rows.items()
    else:
        keys = spec.get("key") or []
        keys = [keys] if isinstance(keys, str) else keys  # a list: the row is named by several fields
        items = ((" / ".join(str(r.get(k)) for k in keys) if keys else str(i), r) for i, r in enumerate(rows))
    cols = spec.get("columns") or []
    out = {}
    for name, row in items:
        if isinstance(row, Mapping):
            out[str(name)] = {c: row.get(c) for c in cols} if cols else dict(row)
        else:
            out[str(name)] = {"value": row}
    return out


def diff_table(a: Mapping, b: Mapping, spec: Mapping, names: tuple[str, str]) -> str:
    """The markdown table of two versions of a study: each figure as a -> b (difference)."""
    ra, rb = table_rows(a, spec), table_rows(b, spec)
    cols = spec.get("columns") or sorted({c for r in [*ra.values(), *rb.values()] for c in r})
    lines = [f"{names[0]} ({a.get('commit', '?')[:12]}, {a.get('date', '?')}) -> "
             f"{names[1]} ({b.get('commit', '?')[:12]}, {b.get('date', '?')})", "",
             "| row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in [*ra, *[r for r in rb if r not in ra]]:
        cells = [_cell(ra.get(row, {}).get(c), rb.get(row, {}).get(c)) for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(x: Any, y: Any) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return f"{fmt(x)} -> {fmt(y)} ({y - x:+.4g})" if x != y else fmt(x)
    return fmt(x) if x == y else f"{fmt(x)} -> {fmt(y)}"


def list_studies(studies: Mapping[str, dict]) -> str:
    lines = ["| study | measures | command | minutes |", "|---|---|---|---|"]
    for name, s in studies.items():
        lines.append(f"| {name} | {s['measures']} | `{s['command']}` | {s.get('minutes', '?')} |")
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m xfer.study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="project root holding experiments/studies.yaml")
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    for action in ("run", "report"):
        p = sub.add_parser(action)
        p.add_argument("name")
        p.add_argument("--out-dir", default=None, help="write the JSON and page here (studies that support it)")
        if action == "run":
            p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: appended to the study's command")
    p = sub.add_parser("diff")
    p.add_argument("name")
    p.add_argument("a", help="a commit or a results JSON")
    p.add_argument("b", nargs="?", default=None, help="a commit or a results JSON (default: the working tree)")
    return ap.parse_args(list(argv))


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    root = Path(args.root).resolve()
    studies = load_studies(root)
    if args.action == "list":
        print(list_studies(studies))
        return 0
    spec = study(studies, args.name)
    if args.action == "run":
        return run(root, spec, [a for a in args.extra if a != "--"], args.out_dir)
    if args.action == "report":
        return report(root, spec, args.out_dir)
    if "table" not in spec:
        raise ConfigError(f"study {args.name}: no table to compare (add `table:` to {REGISTRY})")
    (a, name_a), (b, name_b) = (read_version(root, spec["results"], ref) for ref in (args.a, args.b))
    print(diff_table(a, b, spec["table"], (name_a, name_b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
