"""The cluster and nightly reports (pure), and the per-cluster lock's names and messages."""

from __future__ import annotations

import pytest

from groundup.concurrency import ClusterBusy, Holder, holder_variable, limit_name
from groundup.report import PhaseTimes, build_report, format_seconds, rebuild_report, smoke_summary
from groundup.smoke import Where, failed, not_run, passed
from groundup.spec import parse_spec

SPEC = parse_spec({"name": "report-test", "master_count": 1, "worker_count": 2})
NET = {"vpc_id": "vpc-1", "subnet_id": "subnet-1", "security_group_id": "sg-1", "route_table_id": "rtb-1",
       "load_balancer_dns": "report-test-nlb.elb.us-east-2.amazonaws.com"}
NODES = {"master-0": {"instance_id": "i-m0", "public_ip": "3.1.1.1", "state": "running"},
         "worker-0": {"instance_id": "i-w0", "public_ip": None, "state": "running"}}
CHECKS = [passed("etcd healthy", Where.real, "1 member"), failed("nodes Ready", Where.aws, "worker-1 | not Ready"),
          not_run("DNS", Where.aws, "placeholder API")]


def test_cluster_report_names_every_node_with_role_instance_and_addresses() -> None:
    report = build_report(SPEC, NET, NODES, ["network", "compute"])
    rows = [line for line in report.splitlines() if line.startswith("| report-test-")]
    assert [row.split(" | ")[1] for row in rows] == ["master", "worker", "worker"]
    assert "| i-m0 |" in rows[0] and "3.1.1.1" in rows[0] and str(SPEC.masters[0].private_ip) in rows[0]
    assert "| missing |" in rows[2], "a node without an instance says so"
    assert "https://report-test-nlb.elb.us-east-2.amazonaws.com:6443" in report
    assert "Phase times" not in report and "Smoke" not in report


def test_cluster_report_adds_kubeconfig_artifacts_times_and_smoke_when_given() -> None:
    times = PhaseTimes()
    times.record("network", 1.25, "completed")
    times.record("bootstrap", 75.0, "completed")
    report = build_report(SPEC, NET, NODES, ["network", "bootstrap", "smoke"], timings=times, smoke=CHECKS,
                          kubeconfig="/root/.kube/report-test.kubeconfig", artifacts="/srv/artifacts/report-test")
    assert "`/root/.kube/report-test.kubeconfig`" in report and "`/srv/artifacts/report-test`" in report
    assert "| network | 1.2 s | completed |" in report and "| bootstrap | 1 min 15 s | completed |" in report
    assert "| **total** | 1 min 16 s |" in report
    assert "## Smoke test: 1 passed, 1 failed, 1 not run (1 real, 2 needs AWS)" in report
    assert "worker-1 \\| not Ready" in report, "a '|' in a detail does not break the table"


def test_phase_times_record_a_failed_phase_and_let_its_error_through() -> None:
    times = PhaseTimes()
    with times.phase("teardown"):
        pass
    with pytest.raises(RuntimeError, match="boom"), times.phase("build"):
        raise RuntimeError("boom")
    assert list(times.seconds) == ["teardown", "build"]
    assert times.outcome == {"teardown": "completed", "build": "failed"}


def test_rebuild_report_states_outcome_failure_and_whether_the_cluster_is_up() -> None:
    times = PhaseTimes({"teardown": 2.0, "build": 30.0, "smoke": 4.0}, {"smoke": "failed"})
    report = rebuild_report("report-test", "failed at smoke", times, CHECKS, left_up=True,
                            failure="SmokeFailed: 1 checks failed:\n  nodes Ready: worker-1 not Ready")
    assert report.startswith("# Nightly rebuild of `report-test`: failed at smoke")
    assert "  nodes Ready: worker-1 not Ready" in report
    assert "left up for inspection" in report and "| smoke | 4.0 s | failed |" in report
    assert "| nodes Ready | needs AWS | failed |" in report
    passed_report = rebuild_report("report-test", "passed", times, None, left_up=None)
    assert "left up" not in passed_report and "torn down" not in passed_report and "Smoke" not in passed_report


def test_format_seconds_and_smoke_summary() -> None:
    assert [format_seconds(s) for s in (0.04, 59.94, 60, 3599)] == ["0.0 s", "59.9 s", "1 min 00 s", "59 min 59 s"]
    assert smoke_summary([]) == "no checks ran"


def test_lock_names_and_the_busy_message_name_the_holder() -> None:
    assert limit_name("My.Cluster_1") == "groundup-cluster-My.Cluster_1"
    assert holder_variable("My.Cluster_1") == "groundup-lock-my-cluster_1"
    holder = Holder.from_dict({"flow_run_id": "f-1", "flow_run_name": "brave-fox", "flow_name": "build-cluster",
                               "since": "2026-01-01T02:00:00+00:00"})
    message = str(ClusterBusy("c1", holder))
    assert "build-cluster run 'brave-fox' (flow run f-1" in message and "lock='wait'" in message
    assert "its name was not recorded" in str(ClusterBusy("c1", Holder.from_dict(None)))
