"""Where a job's memory goes: its resident set size over time, against the job's own log lines.

    python experiments/profile_memory.py [--name NAME] -- +experiment=imdb_base [overrides ...]

Runs the job in this process (into a temporary MLflow store) while a thread samples RSS
every 0.1 s, and prints each log line with the RSS at that moment and the highest RSS
reached since the previous line, so the phase that sets the peak is named. Writes
``experiments/results/memory_profile[_NAME].json`` (``peak_rss_mb``, the timeline).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: MLflow run ids in log lines: they name runs of a temporary store
RUN_ID = re.compile(r"[0-9a-f]{32}")
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.since, self.peak, self.stop = 0.0, 0.0, False

    def run(self) -> None:
        while not self.stop:
            r = rss_mb()
            self.since, self.peak = max(self.since, r), max(self.peak, r)
            time.sleep(0.1)

    def take(self) -> float:
        """The highest RSS since the previous call."""
        out, self.since = max(self.since, rss_mb()), rss_mb()
        return out


class Timeline(logging.Handler):
    def __init__(self, sampler: Sampler, t0: float) -> None:
        super().__init__()
        self.sampler, self.t0, self.rows = sampler, t0, []

    def emit(self, record: logging.LogRecord) -> None:
        row = {"seconds": round(time.perf_counter() - self.t0, 1), "rss_mb": round(rss_mb()),
               "peak_before_mb": round(self.sampler.take()), "message": RUN_ID.sub("<run id>", record.getMessage())[:120]}
        self.rows.append(row)
        print(f"{row['seconds']:7.1f}s rss {row['rss_mb']:6d} MB (peak before {row['peak_before_mb']:6d}) "
              f"{row['message']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from xfer.config import compose_config
    from xfer.jobs import run_task
    from xfer.provenance import provenance
    from xfer.tracking import make_tracker

    prov = provenance()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    timeline = Timeline(sampler, t0)
    logging.getLogger().addHandler(timeline)
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="xfer-memprof-") as tmp:
        cfg = compose_config([*args.overrides, f"tracking.uri=sqlite:///{tmp}/mlflow.db", "trainer.progress=false"])
        timeline.emit(logging.LogRecord("profile", logging.INFO, "", 0, "start", None, None))
        run_task(cfg, Path(tmp) / "out", make_tracker(cfg["tracking"]))
        timeline.emit(logging.LogRecord("profile", logging.INFO, "", 0, "end", None, None))
        for row in timeline.rows:  # the log lines name files of the temporary store
            row["message"] = row["message"].replace(tmp, "<temporary directory>")
    sampler.stop = True
    out = {**prov, "overrides": args.overrides, "peak_rss_mb": round(sampler.peak),
           "wall_seconds": time.perf_counter() - t0, "timeline": timeline.rows}
    name = f"memory_profile_{args.name}" if args.name else "memory_profile"
    (ROOT / "experiments" / "results" / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"peak RSS {sampler.peak:.0f} MB")


if __name__ == "__main__":
    main()
