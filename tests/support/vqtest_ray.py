"""A real local multi-node Ray cluster for tests (nodes of 1 CPU and a small object store, in this process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

OBJECT_STORE = 96 * 2**20


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


class LocalRay:
    """A 2-node Ray cluster (1 CPU, small object store each) in this process; ``restart`` replaces it."""

    def __init__(self, nodes: int = 2) -> None:
        self.nodes = nodes
        self.start()

    def start(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        args = {"num_cpus": 1, "object_store_memory": OBJECT_STORE}
        self.cluster = Cluster(initialize_head=True, head_node_args=args)
        for _ in range(self.nodes - 1):
            self.cluster.add_node(**args)
        self.cluster.wait_for_nodes(timeout=60)
        ray.init(address=self.cluster.address, logging_level="ERROR", log_to_driver=False)

    def stop(self) -> None:
        import ray

        before = _descendants(os.getpid())
        ray.shutdown()
        self.cluster.shutdown()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (before & _descendants(os.getpid())):
            time.sleep(0.2)
        left = before & _descendants(os.getpid())
        assert not left, f"Ray processes survived the cluster's shutdown: {sorted(left)}"

    def restart(self) -> None:
        self.stop()
        self.start()
