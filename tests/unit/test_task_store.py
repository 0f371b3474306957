"""The tasks of one flow run share one store lookup and one SSH key load; a new flow run looks again."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import prefect.context

import tasks.store as task_store
from groundup.spec import ClusterSpec

SPEC = ClusterSpec(name="demo")


def _in_flow_run(monkeypatch, flow_run_id: str) -> None:
    run = SimpleNamespace(task_run=SimpleNamespace(flow_run_id=flow_run_id))
    monkeypatch.setattr(prefect.context.TaskRunContext, "get", classmethod(lambda cls: run))


def test_one_lookup_per_flow_run_and_again_for_the_next(monkeypatch):
    lookups = []
    monkeypatch.setattr(task_store, "get_store", lambda name: lookups.append(name) or object())
    monkeypatch.setattr(task_store, "_cache", {})
    _in_flow_run(monkeypatch, "run-1")
    first = task_store.cluster_store(SPEC)
    assert task_store.cluster_store(SPEC) is first and lookups == ["demo"]
    _in_flow_run(monkeypatch, "run-2")
    assert task_store.cluster_store(SPEC) is not first and lookups == ["demo", "demo"]


def test_the_ssh_key_loads_once_and_its_store_lookup_inside_does_not_deadlock(monkeypatch):
    class Store:
        reads = 0

        def read_private_key(self, path):
            Store.reads += 1
            return "key"

    monkeypatch.setattr(task_store, "get_store", lambda name: Store())
    monkeypatch.setattr(task_store, "pkey_from_cryptography", lambda key: ("pkey", key))
    monkeypatch.setattr(task_store, "_cache", {})
    _in_flow_run(monkeypatch, "run-1")
    got = []
    worker = threading.Thread(target=lambda: got.extend(task_store.cluster_ssh_key(SPEC) for _ in range(3)),
                              daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "cluster_ssh_key deadlocked on its own store lookup"
    assert got == [("pkey", "key")] * 3 and Store.reads == 1
