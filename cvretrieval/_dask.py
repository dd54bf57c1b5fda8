"""Running the pipeline's chunks on a dask.distributed cluster (extra ``dist``).

The job (embedder, fitted state) is scattered to every worker once; chunks are submitted
in a sliding window of a few per worker and their results are yielded in input order, so
neither the cluster nor this process holds more than the window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import MissingExtraError

logger = logging.getLogger(__name__)
_CLIENTS: dict[str, Any] = {}


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError(
            "--scheduler needs Dask: pip install 'cvretrieval[dist]'") from None
    return distributed


def resolve_scheduler(value: str | None) -> str | None:
    """``--scheduler`` or ``$CVRET_SCHEDULER``; ``None``/``""``/``"joblib"`` = no Dask."""
    value = value if value is not None else os.environ.get("CVRET_SCHEDULER")
    if not value or value.strip().lower() in ("joblib", "none"):
        return None
    value = value.strip()
    if value != "local" and "://" not in value:
        raise ValueError(f"--scheduler {value!r} is not 'local' or an address such as "
                         "tcp://host:8786")
    return value


@contextmanager
def _client(scheduler: str) -> Iterator[Any]:
    distributed = _distributed()
    if scheduler in _CLIENTS:
        yield _CLIENTS[scheduler]
        return
    if scheduler == "local":
        cluster = distributed.LocalCluster(processes=True, threads_per_worker=1,
                                           dashboard_address=None, host="127.0.0.1")
        client = distributed.Client(cluster)
    else:
        cluster = None
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except OSError as exc:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler} ({exc}): start one "
                          "(`dask scheduler`) or use --scheduler local") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dask_map(job: Any, tasks: Sequence[Any], scheduler: str,
             chunk_size: int | None) -> Iterator[list[Any]]:
    """Chunk results of ``run_chunk(job, chunk)`` computed on the cluster (packed for the
    trip back), in order."""
    from .pipeline import Job, run_chunk_packed, unpack_items

    with _client(scheduler) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = chunk_size or max(8, min(64, len(tasks) // (n_workers * 8) or 8))
        chunks = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
        wjob = Job(**{**job.__dict__, "in_worker": True})
        [remote_job] = client.scatter([wjob], broadcast=True)
        window = 4 * n_workers
        futures: list[Any] = []
        nxt = 0
        try:
            while nxt < len(chunks) or futures:
                while nxt < len(chunks) and len(futures) < window:
                    futures.append(client.submit(run_chunk_packed, remote_job, chunks[nxt],
                                                 pure=False))
                    nxt += 1
                head = futures.pop(0)
                yield unpack_items(head.result())
                head.release()
        finally:
            for f in futures:
                f.cancel()


@contextmanager
def scheduler_session(scheduler: str | None) -> Iterator[None]:
    """Keep one client (and, for ``local``, one LocalCluster) for a whole command."""
    if not scheduler or scheduler in _CLIENTS:
        yield
        return
    with _client(scheduler) as client:
        _CLIENTS[scheduler] = client
        try:
            yield
        finally:
            del _CLIENTS[scheduler]
