import threading

import torch.distributed as dist

from attnseg.distributed import DistContext, SharedCounter, all_gather_objects, broadcast_object


def test_shared_counter_gives_each_value_to_exactly_one_rank():
    """Four 'ranks' (threads) claim from one store, as ranks claim cases from the process group's store."""
    store = dist.HashStore()
    claimed: dict[int, list[int]] = {rank: [] for rank in range(4)}

    def claim(rank: int) -> None:
        counter = SharedCounter("run/claimed", DistContext(rank=rank, world_size=4), store=store)
        while (value := counter.add(1)) <= 500:
            claimed[rank].append(value)

    threads = [threading.Thread(target=claim, args=(rank,)) for rank in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    values = sorted(v for per_rank in claimed.values() for v in per_rank)
    assert values == list(range(1, 501))  # none lost, none twice
    assert SharedCounter("run/claimed", DistContext(world_size=4), store=store).add(0) == 504  # 0 reads


def test_without_torchrun_everything_is_local():
    counter = SharedCounter("x")
    assert [counter.add(1), counter.add(1), counter.add(0)] == [1, 2, 2]
    assert broadcast_object({"a": 1}, DistContext(), "broadcast") == {"a": 1}
    assert all_gather_objects("mine", DistContext(), "gather") == ["mine"]
