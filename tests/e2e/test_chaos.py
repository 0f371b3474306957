"""Fault injection on the sandbox, the short cases of `make chaos` (sandbox/chaos.py): each builds the
sandbox cluster with one fault, checks how the build ended, tears it down and checks that nothing of
the cluster is left in moto or on this machine. AWS faults come through the fault proxy the build's
AWS_ENDPOINT_URL points at; node faults are done on the nodes; process faults with SIGKILL.

The phases are limited to those the fault touches; the two control-plane faults build the whole cluster
with the real components and probe the API through the NLB while one master's API server or etcd is down."""

from __future__ import annotations

from functools import partial

import pytest

from sandbox import chaos
from tests.e2e.conftest import Sandbox

AWS_PHASES = "network,compute"


def _explain(result: chaos.Result) -> str:
    return (f"{result.case}: ended {result.ending!r} ({result.message!r}); owed but missing: {result.problems}; "
            f"left behind: {result.leaked}; notes: {result.notes}")


@pytest.mark.parametrize("name, case", [
    ("throttling", partial(chaos.case_throttling, times=5, phases=AWS_PHASES)),
    ("eventual-consistency", partial(chaos.case_eventual_consistency, times=2, phases=AWS_PHASES)),
])
def test_transient_aws_errors_are_ridden_out_and_the_teardown_leaves_nothing(sandbox: Sandbox, name, case) -> None:
    result = chaos.run_case(name, case, sandbox.state)
    assert result.ending == "recovered", _explain(result)
    assert result.ok, _explain(result)


def test_a_node_that_never_answers_fails_the_build_naming_it_and_the_others_get_their_files(sandbox: Sandbox) -> None:
    case = partial(chaos.case_unreachable_node, node="worker-2", boot_timeout_s=8,
                   phases="network,compute,pki,distribute")
    result = chaos.run_case("unreachable-node", case, sandbox.state)
    assert result.ending == "failed" and "worker-2" in result.message, _explain(result)
    assert result.ok, _explain(result)


def test_sshd_killed_during_an_upload_is_ridden_out_or_named_and_a_rerun_completes(sandbox: Sandbox) -> None:
    case = partial(chaos.case_sshd_killed_mid_upload, node="worker-0", phases="network,compute,pki,distribute")
    result = chaos.run_case("sshd-killed-mid-upload", case, sandbox.state)
    assert result.ending in {"recovered", "failed, re-run completed"}, _explain(result)
    assert result.ok, _explain(result)


def test_a_teardown_killed_midway_and_run_again_leaves_nothing(sandbox: Sandbox) -> None:
    result = chaos.run_case("teardown-killed", chaos.case_teardown_killed, sandbox.state)
    assert result.ending == "killed, re-run completed", _explain(result)
    assert result.ok, _explain(result)


def test_an_api_server_stopped_on_one_master_leaves_the_api_answering_through_the_load_balancer(sandbox: Sandbox) -> None:
    result = chaos.run_case("apiserver-down", chaos.case_apiserver_down, sandbox.state)
    print(f"\napiserver-down: {result.message}; {'; '.join(result.notes[:-1])}")
    assert result.ending == "served throughout, smoke passed", _explain(result)
    assert result.ok, _explain(result)


def test_an_etcd_member_stopped_leaves_reads_and_writes_working(sandbox: Sandbox) -> None:
    result = chaos.run_case("etcd-member-down", chaos.case_etcd_member_down, sandbox.state)
    print(f"\netcd-member-down: {result.message}")
    assert result.ending == "served, smoke passed" and result.message.startswith("10 of 10"), _explain(result)
    assert result.ok, _explain(result)
