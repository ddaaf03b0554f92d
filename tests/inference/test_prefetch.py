import threading
import time

import pytest

from attnseg.inference.prefetch import prefetch


class Loads:
    """A load function that records which items it loaded and in which threads; one item is corrupt."""

    def __init__(self, seconds: float = 0.0, corrupt: int | None = 3) -> None:
        self.seconds = seconds
        self.corrupt = corrupt
        self.lock = threading.Lock()
        self.loaded: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, item: int) -> int:
        time.sleep(self.seconds)
        if item == self.corrupt:
            raise ValueError(f"item {item} is corrupt")
        with self.lock:
            self.loaded.append(item)
            self.threads.add(threading.current_thread().name)
        return item * 10


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_items_come_in_order_with_their_own_failure(ahead):
    loads = Loads(seconds=0.01)
    results = []
    for item, future in prefetch(range(6), loads, ahead):
        try:
            results.append((item, future.result()))
        except ValueError as error:
            results.append((item, str(error)))
    assert results == [(0, 0), (1, 10), (2, 20), (3, "item 3 is corrupt"), (4, 40), (5, 50)]
    if ahead == 0:
        assert loads.threads == {threading.current_thread().name}
    else:
        assert all(name.startswith("attnseg-loader") for name in loads.threads)


@pytest.mark.parametrize("ahead", [1, 2])
def test_at_most_ahead_items_are_taken_beyond_the_current_one(ahead):
    """Memory stays bounded: while the caller holds item k, only items up to k + ahead were taken from
    the source (the source may be claiming work from other processes), loaded or loading."""
    taken: list[int] = []

    def source():
        for item in range(8):
            taken.append(item)
            yield item

    for item, future in prefetch(source(), Loads(corrupt=None), ahead):
        future.result()
        time.sleep(0.01)  # the loaders have every chance to run further ahead, and must not
        assert max(taken) <= item + ahead


def test_stopping_early_leaves_no_loader_behind():
    loads = Loads(seconds=0.05, corrupt=None)
    for item, future in prefetch(range(100), loads, 2):
        future.result()
        if item == 1:
            break
    assert set(loads.loaded) <= {0, 1, 2, 3}  # what was taken while item 1 was held; nothing after
    assert not [t for t in threading.enumerate() if t.name.startswith("attnseg-loader")]
