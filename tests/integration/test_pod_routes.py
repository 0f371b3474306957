"""Pod routes in the VPC route table against a moto server: one per worker, idempotent, stale ones removed."""

from __future__ import annotations

import pytest

from flows.build_cluster import build_cluster
from groundup.aws import pod_routes
from groundup.aws.compute import describe_nodes
from groundup.aws.core import make_context
from groundup.spec import parse_spec
from tests.integration.awsprobe import clients, recording

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

SPEC = parse_spec({"name": "routes", "master_count": 1, "worker_count": 3, "vpc_cidr": "10.240.0.0/16",
                   "subnet_cidr": "10.240.0.0/24", "pod_cidr": "10.200.0.0/16", "associate_public_ip": False})


def _routes(table_id: str) -> dict[str, str | None]:
    ec2, _ = clients()
    (table,) = ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"]
    return pod_routes.pod_routes(table)


def test_one_route_per_worker_then_nothing_then_stale_removed(aws, monkeypatch):
    build_cluster(spec=SPEC, phases=["network", "compute"])
    ctx = make_context(SPEC)
    instances = describe_nodes(ctx)
    for worker in SPEC.workers:
        assert pod_routes.ensure_pod_route(ctx, worker, instances[worker.short_name]["instance_id"]) == str(worker.pod_cidr)
    table = pod_routes.find_route_table(ctx)["RouteTableId"]
    routes = _routes(table)
    assert {str(w.pod_cidr): instances[w.short_name]["instance_id"] for w in SPEC.workers}.items() <= routes.items()

    with recording(monkeypatch) as log:
        again = make_context(SPEC)
        for worker in SPEC.workers:
            pod_routes.ensure_pod_route(again, worker, instances[worker.short_name]["instance_id"])
        assert pod_routes.remove_stale_pod_routes(again) == []
    assert log.mutating() == {}

    smaller = SPEC.model_copy(update={"worker_count": 2})
    assert pod_routes.remove_stale_pod_routes(make_context(smaller)) == ["10.200.2.0/24"]
    assert "10.200.2.0/24" not in _routes(table)


def test_a_route_to_the_wrong_instance_is_replaced(aws):
    build_cluster(spec=SPEC, phases=["network", "compute"])
    ctx = make_context(SPEC)
    instances = describe_nodes(ctx)
    first, second = SPEC.workers[0], SPEC.workers[1]
    pod_routes.ensure_pod_route(ctx, first, instances[second.short_name]["instance_id"])
    pod_routes.ensure_pod_route(ctx, first, instances[first.short_name]["instance_id"])
    table = pod_routes.find_route_table(ctx)["RouteTableId"]
    assert _routes(table)[str(first.pod_cidr)] == instances[first.short_name]["instance_id"]
