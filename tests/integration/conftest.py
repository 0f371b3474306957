"""Fixtures shared by the deployment tests: a real `prefect server start` per module, a fault proxy in
front of the session's moto server, and a process worker whose flows reach moto through that proxy."""

from __future__ import annotations

import pytest

from deployments.register import WORK_POOL
from tests.ui.stack import AWS_TEST_ENV, FaultProxy, prefect_stack


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    with prefect_stack(tmp_path_factory.mktemp(f"prefect-{request.module.__name__.rsplit('.', 1)[-1]}")) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(moto_server):
    moto_server.reset()
    running = FaultProxy(moto_server.endpoint).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def worker(request, stack, proxy, tmp_path_factory):
    module = request.module.__name__.rsplit(".", 1)[-1]
    home = tmp_path_factory.mktemp(f"worker-{module}")
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": proxy.endpoint, "GROUNDUP_ARTIFACTS": str(home / "artifacts")}
    return stack.start_worker(f"{module}-worker", WORK_POOL, env, home / "worker.log")
