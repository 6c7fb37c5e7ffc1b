"""Build and validate profile records in worker processes, in order.

Building a record (about 14 microseconds), validating it and serializing it are pure Python
per record and hold the GIL, so one process uses one core however many there are. Here the
parent reads ``profile_insights`` in Arrow batches and hands each batch to a pool of worker
processes; each returns the batch's checked records (:data:`.batches.Checked`), and the parent
yields them in the order it read them. The output is byte-for-byte the one of the serial path:
the same rows in the same order through the same functions.

Workers are started with ``spawn`` (never ``fork``: the parent holds a DuckDB connection and
its threads). At most ``2 * workers`` batches are in flight, so memory stays bounded whatever
the table's size.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from .batches import Checked
from .records import build_records
from .validate import RecordValidator

#: Below this many rows the export runs in-process: starting workers costs about a second.
MIN_ROWS_FOR_WORKERS = 50_000


def default_workers() -> int:
    """The cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_batch(
    batch: Any, tenant: str, as_of: str, max_record_bytes: int, keep_records: bool
) -> list[Checked]:
    """Build and validate the records of one Arrow batch of ``profile_insights`` rows.

    The record itself is kept only where the writer needs it: for a reject, and for every
    record when ``keep_records`` (Parquet rows are built from the record, not its JSON).
    """
    validator = RecordValidator(tenant, max_record_bytes)
    out: list[Checked] = []
    for record in build_records(batch.to_pylist(), tenant, as_of):
        reasons, data = validator.check(record)
        out.append((record if reasons or keep_records else None, reasons, data))
    return out


def checked_in_workers(
    batches: Iterable[Any],
    *,
    tenant: str,
    as_of: str,
    max_record_bytes: int,
    keep_records: bool,
    workers: int,
) -> Iterator[Checked]:
    """:func:`check_batch` over ``batches`` in ``workers`` processes, yielded in input order
    (``workers`` 1: in this process, with no pool to start)."""
    if workers == 1:
        for batch in batches:
            yield from check_batch(batch, tenant, as_of, max_record_bytes, keep_records)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[list[Checked]]] = deque()
    try:
        for batch in batches:
            pending.append(
                pool.submit(check_batch, batch, tenant, as_of, max_record_bytes, keep_records)
            )
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
