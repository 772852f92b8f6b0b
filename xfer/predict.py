"""Batch prediction: score a CSV of raw reviews in chunks.

    python -m xfer.predict model=models:/imdb-sentiment@champion input=reviews.csv output=scored.csv

``model`` takes a bundle or pyfunc model directory, an MLflow run id, ``runs:/<id>/bundle``
or a ``models:/`` URI. The input needs the columns the model was trained on (IMDB:
``text``; hotel: ``Description``, ``Browser_Used``, ``Device_Used``) and may be gzipped.
The output (gzipped when its name ends in ``.gz``) keeps every input column and adds
``probability`` and ``label`` (named
``predicted_probability``/``predicted_label`` if the input already has such columns).
The file is read ``chunk_size`` rows at a time (memory does not grow with its size),
written to a temporary file beside ``output`` and renamed at the end, so ``output`` is
either complete or untouched (directories made for it are removed again on failure). The input
is never overwritten.

Options (``key=value``): model, input, output, chunk_size (5000), batch_size (0: batches of
about 32,768 tokens, grouped by length; N: of N reviews),
max_text_chars (100000; longer reviews are an error), tracking_uri, progress (true).
"""
from __future__ import annotations

import gzip
import logging
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .data import made_dirs
from .errors import ConfigError, DataError, cli_main

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"model": None, "input": None, "output": None, "chunk_size": 5000, "batch_size": 0,
                            "max_text_chars": 100_000, "tracking_uri": None, "progress": True}


@dataclass
class PredictResult:
    rows: int
    seconds: float
    output: Path

    @property
    def reviews_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    opts = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"{arg!r}: expected key=value (keys: {', '.join(DEFAULTS)})")
        key = key.lstrip("+")
        if key not in DEFAULTS:
            raise ConfigError(f"{key}: unknown option (one of {', '.join(DEFAULTS)})")
        opts[key] = value
    for key in ("model", "input", "output"):
        if not opts[key]:
            raise ConfigError(f"{key}: required (python -m xfer.predict model=<uri> input=<csv> output=<csv>)")
    for key in ("chunk_size", "batch_size", "max_text_chars"):
        try:
            opts[key] = int(opts[key])
        except ValueError:
            raise ConfigError(f"{key}: {opts[key]!r} is not an integer") from None
        low = 0 if key == "batch_size" else 1  # batch_size 0: batches by tokens
        if opts[key] < low:
            raise ConfigError(f"{key}: must be >= {low}")
    opts["progress"] = str(opts["progress"]).lower() not in ("false", "0", "no", "off")
    return opts


def _output_names(columns: Sequence[str]) -> tuple[str, str]:
    if "probability" in columns or "label" in columns:
        return "predicted_probability", "predicted_label"
    return "probability", "label"


def predict_csv(bundle, src: str | Path, dst: str | Path, chunk_size: int = 5000, batch_size: int = 0,
                max_text_chars: int | None = 100_000, progress: bool = False) -> PredictResult:
    """Stream ``src`` through ``bundle`` into ``dst`` (atomically); see the module docs."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src}: file not found")
    if src.stat().st_size == 0:
        raise DataError(f"{src}: file is empty")
    if dst.exists() and os.path.samefile(src, dst) or dst.resolve() == src.resolve():
        raise ConfigError(f"output: {dst} is the input file; refusing to overwrite it")
    if dst.is_dir():
        raise ConfigError(f"output: {dst} is a directory")
    with made_dirs(dst.parent):  # removed again when the prediction fails
        return _stream(bundle, src, dst, chunk_size, batch_size, max_text_chars, progress)


def _stream(bundle, src: Path, dst: Path, chunk_size: int, batch_size: int, max_text_chars: int | None,
            progress: bool) -> PredictResult:
    """predict_csv's work, in a directory that exists: chunks of ``src`` scored into a temporary
    file renamed to ``dst`` at the end."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    from tqdm import tqdm

    raw = open(src, "rb")
    handle = gzip.open(raw) if src.suffix == ".gz" else raw
    bar = tqdm(total=src.stat().st_size, unit="B", unit_scale=True, disable=not progress, desc=src.name)
    rows, t0, sink = 0, time.perf_counter(), None
    try:
        # the temporary name hides the suffix from pandas: compress here when the output asks for it
        sink = (gzip.open(tmp, "wt", encoding="utf-8", newline="") if dst.suffix == ".gz"
                else open(tmp, "w", encoding="utf-8", newline=""))
        for chunk in _chunks(lambda: pd.read_csv(handle, chunksize=chunk_size, dtype=str, encoding="utf-8",
                                                 on_bad_lines="error"), src):
            if chunk.empty:
                continue
            pred = bundle.predict_frame(chunk, str(src), batch_size or None, max_text_chars)
            p_name, l_name = _output_names(list(chunk.columns))
            out = chunk.assign(**{p_name: pred["probability"].to_numpy(), l_name: pred["label"].to_numpy()})
            out.to_csv(sink, header=not rows, index=False)
            rows += len(chunk)
            bar.update(raw.tell() - bar.n)
            bar.set_postfix(reviews=rows, per_s=f"{rows / (time.perf_counter() - t0):.0f}")
        if rows == 0:
            raise DataError(f"{src}: file has a header but no rows")
        sink.close()
        os.replace(tmp, dst)
    except BaseException:
        if sink is not None:
            sink.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        handle.close()
        raw.close()
    return PredictResult(rows, time.perf_counter() - t0, dst)


def _chunks(open_reader, src: Path):
    """The chunks of the reader ``open_reader()`` makes (it reads the first block at once),
    with pandas' decoding/parsing errors as one-line DataErrors."""
    it = None
    while True:
        try:
            it = it or iter(open_reader())
            chunk = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as e:
            raise DataError(f"{src}: undecodable bytes (not UTF-8: {e.reason})") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{src}: file is empty (no header or rows)") from None
        except pd.errors.ParserError as e:
            raise DataError(f"{src}: malformed CSV: {str(e).replace('Error tokenizing data. C error: ', '')}") \
                from None
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{src}: cannot read file (corrupt or not gzip/CSV): {e}") from None
        yield chunk


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    from .tracking import resolve_bundle

    bundle = resolve_bundle(str(opts["model"]), opts["tracking_uri"])
    res = predict_csv(bundle, opts["input"], opts["output"], opts["chunk_size"], opts["batch_size"],
                      opts["max_text_chars"], opts["progress"])
    print(f"{res.output}: {res.rows} reviews scored in {res.seconds:.1f} s "
          f"({res.reviews_per_second:.0f} reviews/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
