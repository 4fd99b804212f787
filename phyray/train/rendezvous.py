"""The torch process group of a Ray Train worker group, without a port race.

Ray's `TorchConfig` asks rank 0 for a free port (bind to port 0, close the socket), then tells
every worker to rendezvous there. Between the close and rank 0's `TCPStore` listening, anything
on the node may take the port: another trial's worker group doing the same, or any outgoing
connection, since ephemeral ports come from the same range. Two trials starting side by side on
one node (a Tune grid on a laptop) met it: rank 0 failed with EADDRINUSE, and Ray treats that
as a controller error it does not retry, so the trial failed.

Here rank 0 opens the store's listening socket on port 0 itself and keeps it, and only then are
the other ranks told the port: nothing can take it in between. The rest is Ray's `_TorchBackend`
(its shutdown, CUDA device handling and backend choice, which `TorchTrainer` fills in).
"""

from __future__ import annotations

import os
from datetime import timedelta

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

# Rank 0's listening store, held from the moment its port is chosen until the process group
# owns it (one per worker process: a Ray Train worker is in one worker group at a time).
_listening_store = None


def _open_store(timeout_s: int) -> tuple[str, int]:
    """On rank 0: listen on a port the kernel picks; return the node's address and that port."""
    import ray
    import torch.distributed as dist

    global _listening_store
    address = ray.util.get_node_ip_address()
    _listening_store = dist.TCPStore(
        address, 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s)
    )
    return address, _listening_store.port


def _join_process_group(backend: str, world_rank: int, world_size: int, address: str, port: int, timeout_s: int) -> None:
    """On every rank: `init_process_group` over rank 0's store (its own listening one on rank 0)."""
    import torch.distributed as dist

    global _listening_store
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)  # as env:// would leave them
    if "nccl" in backend and not {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_BLOCKING_WAIT"} & set(os.environ):
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"  # as Ray's: a timed-out collective fails the run
    timeout = timedelta(seconds=timeout_s)
    if world_rank == 0:
        store, _listening_store = _listening_store, None  # the process group keeps it from here
    else:
        store = dist.TCPStore(address, port, is_master=False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


class _ListeningStoreBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        import ray

        address, port = worker_group.execute_single(0, _open_store, timeout_s=backend_config.timeout_s)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([
            worker_group.execute_single_async(
                rank, _join_process_group, backend=backend_config.backend, world_rank=rank, world_size=len(worker_group),
                address=address, port=port, timeout_s=backend_config.timeout_s,
            )
            for rank in range(len(worker_group))
        ])


class ListeningStoreTorchConfig(TorchConfig):
    """`TorchConfig` whose process group rendezvouses at a store rank 0 already listens on."""

    @property
    def backend_cls(self):
        return _ListeningStoreBackend
