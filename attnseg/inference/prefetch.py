"""Load the next items in background threads while the caller works on the current one.

Why threads and not a ``torch.utils.data.DataLoader`` with worker processes: the work that overlaps
here (gzip inflation in nibabel, SimpleITK and pydicom reads, numpy and torch resampling) runs in C with
the GIL released, so threads do overlap with the network; they share the process's memory, so a
preprocessed volume of a few hundred MB reaches the network without being pickled through a pipe; and
they start instantly, without forking a process that holds CUDA and a process group. Memory stays
bounded: at most ``ahead`` items are loaded (or loading) beyond the one the caller holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], load: Callable[[T], R], ahead: int) -> Iterator[tuple[T, Future[R]]]:
    """Yield ``(item, future)`` in the order of ``items``; ``future.result()`` is ``load(item)`` or raises
    what ``load`` raised, so one bad item does not stop the others.

    ``ahead`` threads load the next ``ahead`` items while the caller holds the current one; ``ahead=0``
    loads each item in the calling thread when it is reached. ``items`` is consumed in the calling
    thread (it may claim work from other processes), one item at a time, as the window moves on.
    """
    if ahead <= 0:
        for item in items:
            yield item, _run(load, item)
        return
    iterator = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="attnseg-loader")
    try:
        for item in iterator:
            pending.append((item, pool.submit(load, item)))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:  # the caller stopped early or failed: drop what has not started, wait for what has
        pool.shutdown(wait=True, cancel_futures=True)


def _run(load: Callable[[T], R], item: T) -> Future[R]:
    future: Future[R] = Future()
    try:
        future.set_result(load(item))
    except Exception as error:  # delivered to the caller with its item, like a background failure
        future.set_exception(error)
    return future
