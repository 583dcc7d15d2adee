"""The in-process engine: Arrow record batches in, record batches out, so memory stays flat whatever the input size."""

from __future__ import annotations

import glob
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.batch.core import BatchError, Model, Tally, check_columns, now, output_schema, score, to_matrix

log = logging.getLogger("pipeline.batch")

BATCH_ROWS = 131_072
CSV_BLOCK_BYTES = 8 << 20
WORKERS = max(1, min(4, os.cpu_count() or 1))
T, R = TypeVar("T"), TypeVar("R")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def input_files(path: str) -> list[Path]:
    """A file, a folder of part files (hidden and _SUCCESS-style files skipped) or a glob, in name order."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in SUFFIXES]
        files = [f for f in files if not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in sorted(glob.glob(path, recursive=True)) if Path(f).is_file()]
    if not files:
        raise BatchError(f"no input file at {path}")
    unknown = [f.name for f in files if f.suffix.lower() not in SUFFIXES]
    if unknown:
        raise BatchError(f"input must be CSV or Parquet (.csv, .parquet): {unknown[0]}")
    return files


def _kind(f: Path) -> str:
    return SUFFIXES[f.suffix.lower()]


def _header(f: Path) -> list[str]:
    if _kind(f) == "parquet":
        return pq.ParquetFile(f).schema_arrow.names
    with pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
        return reader.schema.names


def _batches(f: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if _kind(f) == "parquet":
        yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    # Everything as text: a stray word in a numeric column is then one invalid row, not a failed read, and ids
    # keep their leading zeros. Empty cells and NA/NaN/null are missing values.
    convert = pacsv.ConvertOptions(
        include_columns=columns, column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=True
    )
    with pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert) as r:
        yield from r


def _total_rows(files: list[Path]) -> int | None:
    if all(_kind(f) == "parquet" for f in files):
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return None


class Progress:
    """A tqdm bar with rows/s on a terminal; a plain line every few seconds in a log."""

    def __init__(self, total: int | None, every: float = 10.0) -> None:
        self.total, self.every, self.done = total, every, 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=" rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        t = time.monotonic()
        if t - self.last >= self.every:
            self.last = t
            pct = f" ({self.done / self.total:.0%})" if self.total else ""
            log.info("scored %d rows%s, %.0f rows/s", self.done, pct, self.done / (t - self.start))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_local(
    model: Model,
    mapping: dict[str, str],
    source: str,
    output: str,
    id_columns: list[str],
    contributions: bool,
    max_error_rate: float,
) -> Tally:
    """Score ``source`` into ``output`` (Parquet, or CSV when it ends in .csv). The file appears only when the job
    passes its error-rate check; a failed job leaves nothing behind."""
    files = input_files(source)
    columns = list(dict.fromkeys([*id_columns, *mapping.values()]))
    tally, total = Tally(), _total_rows(files)
    scored_at = pa.scalar(now(), pa.timestamp("us", tz="UTC"))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer, progress, published = None, Progress(total), False
    constants = _Constants(model, scored_at)

    def score_batch(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[str, pa.Array], np.ndarray]:
        n = batch.num_rows
        X, errors = to_matrix(model, {name: _col(batch, col) for name, col in mapping.items()}, n)
        values = {c: batch.column(c) for c in id_columns} | score(model, X, errors, contributions)
        return batch, values | constants.columns(n), errors[errors != ""]

    try:
        for batch, values, reasons in _in_order(score_batch, _read(files, columns, model, mapping, id_columns)):
            if writer is None:
                ids = [batch.schema.field(c) for c in id_columns]
                writer = _BackgroundWriter(tmp, out, output_schema(model, ids, contributions))
            writer.write([values[k] for k in writer.schema.names])
            tally.add(reasons, batch.num_rows)
            progress.update(batch.num_rows)
            if total and tally.invalid > max_error_rate * total:
                tally.stopped = True  # more bad rows than the whole input may hold: no need to read on
                return tally
        if writer is None:
            raise BatchError(f"no rows in {source}")
        writer.close()
        writer = None
        if tally.rate <= max_error_rate:
            os.replace(tmp, out)
            published = True
        return tally
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if not published:
            tmp.unlink(missing_ok=True)


class _Constants:
    """model_name, model_version and scored_at columns, built once per batch length (most batches are alike)."""

    def __init__(self, model: Model, scored_at: pa.Scalar) -> None:
        self.values = {"model_name": pa.scalar(model.name), "model_version": pa.scalar(model.version),
                       "scored_at": scored_at}  # fmt: skip
        self.cache: dict[int, dict[str, pa.Array]] = {}

    def columns(self, n: int) -> dict[str, pa.Array]:
        if n not in self.cache:
            self.cache = {n: {k: pa.repeat(v, n) for k, v in self.values.items()}}
        return self.cache[n]


class _BackgroundWriter:
    """Encodes and compresses on a second thread (Arrow releases the GIL) while the next batch is scored; a short
    queue keeps memory flat."""

    def __init__(self, tmp: Path, out: Path, schema: pa.Schema) -> None:
        self.schema = schema
        if out.suffix.lower() == ".csv":
            self.sink: pq.ParquetWriter | pacsv.CSVWriter = pacsv.CSVWriter(tmp, schema)
        else:
            self.sink = pq.ParquetWriter(tmp, schema)
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write_batch(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the scoring thread
                    self.error = exc

    def write(self, arrays: list[pa.Array]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.sink.close()
        if self.error is not None:
            raise self.error


def _read(
    files: list[Path], columns: list[str], model: Model, mapping: dict[str, str], id_columns: list[str]
) -> Iterator[pa.RecordBatch]:
    for f in files:
        have = _header(f)
        check_columns(model, mapping, have, id_columns)
        yield from _batches(f, [c for c in columns if c in have])


def _in_order(fn: Callable[[T], R], items: Iterator[T]) -> Iterator[R]:
    """``map(fn, items)`` on a few threads (numpy and Arrow release the GIL), in input order, with at most
    ``workers + 1`` batches in flight so memory stays flat."""
    workers = WORKERS
    with ThreadPoolExecutor(workers, thread_name_prefix="batch-score") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _col(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    i = batch.schema.get_field_index(name)
    return batch.column(i) if i >= 0 else None
