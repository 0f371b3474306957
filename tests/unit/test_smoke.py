"""Smoke checks judged from recorded command output: etcd, units, the API, nodes, leases, Secret, pods."""

from __future__ import annotations

import json

from groundup import smoke
from groundup.smoke import Status, Where
from groundup.spec import parse_spec

SPEC = parse_spec({"name": "smoke", "subnet_cidr": "10.240.0.0/24", "vpc_cidr": "10.240.0.0/16",
                   "pod_cidr": "10.200.0.0/16"})
MASTERS = [f"https://10.240.0.{10 + i}:2379" for i in range(3)]

MEMBER_LIST = json.dumps({"header": {"cluster_id": 1}, "members": [
    {"ID": 1, "name": "master-0", "peerURLs": ["https://10.240.0.10:2380"], "clientURLs": ["https://10.240.0.10:2379"]},
    {"ID": 2, "name": "master-1", "peerURLs": ["https://10.240.0.11:2380"], "clientURLs": ["https://10.240.0.11:2379"]},
    {"ID": 3, "name": "master-2", "peerURLs": ["https://10.240.0.12:2380"], "clientURLs": ["https://10.240.0.12:2379"]},
]})
HEALTH_JSON = json.dumps([{"endpoint": e, "health": True, "took": "2ms"} for e in MASTERS])


def test_three_started_healthy_members_pass():
    check = smoke.judge_etcd(SPEC, smoke.parse_member_list(MEMBER_LIST), smoke.parse_endpoint_health(HEALTH_JSON))
    assert check.status is Status.passed and check.where is Where.real


def test_an_unstarted_member_and_an_unhealthy_endpoint_are_named():
    members = json.loads(MEMBER_LIST)
    members["members"][2]["name"] = ""
    output = (f"{MASTERS[0]} is healthy: successfully committed proposal: took = 2ms\n"
              f"{MASTERS[1]} is healthy: successfully committed proposal: took = 3ms\n"
              f"{MASTERS[2]} is unhealthy: failed to commit proposal: context deadline exceeded\n"
              "Error: unhealthy cluster\n")
    check = smoke.judge_etcd(SPEC, smoke.parse_member_list(json.dumps(members)),
                             smoke.health_from_failure(SPEC, output))
    assert check.status is Status.failed
    assert "master-2 is not a started member" in check.detail
    assert "master-2 (https://10.240.0.12:2379) is unhealthy" in check.detail


SHOW = """Id=etcd.service
ActiveState=active
SubState=running
NRestarts=0

Id=kube-apiserver.service
ActiveState=activating
SubState=auto-restart
NRestarts=4

Id=kube-scheduler.service
ActiveState=active
SubState=running
NRestarts=2
"""


def test_units_not_running_or_restarting_between_two_looks_are_problems():
    master = SPEC.masters[0]
    units = ["etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager"]
    first = smoke.parse_unit_show(SHOW)
    later = smoke.parse_unit_show(SHOW.replace("NRestarts=2", "NRestarts=3"))
    assert smoke.judge_units(master, units, first, later) == [
        "master-0: kube-apiserver is activating/auto-restart",
        "master-0: kube-scheduler restarted 1 times in 6 s",
        "master-0: kube-controller-manager is ?/?",
    ]


def test_restarts_before_the_first_look_are_history_not_a_problem():
    shown = smoke.parse_unit_show(SHOW)
    assert smoke.judge_units(SPEC.masters[0], ["kube-scheduler"], shown, shown) == []


def _look(now_s: float, units: dict[str, tuple[str, int, float]]) -> dict:
    """A look with the node's clock: {unit: (ActiveState/SubState, NRestarts, active since, s)}."""
    blocks = [f"MonotonicNow={int(now_s * 1e6)}"]
    for unit, (state, restarts, since) in units.items():
        active, sub = state.split("/")
        blocks.append(f"Id={unit}.service\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
                      f"ActiveEnterTimestampMonotonic={int(since * 1e6)}")
    return smoke.parse_unit_show("\n\n".join(blocks))


def test_units_active_for_the_whole_window_need_one_look():
    look = _look(1000.0, {"etcd": ("active/running", 0, 100.0), "kube-scheduler": ("active/running", 3, 990.0)})
    assert smoke.settle_seconds(["etcd", "kube-scheduler"], look) == 0.0
    assert smoke.judge_units(SPEC.masters[0], ["etcd", "kube-scheduler"], look) == []


def test_a_unit_started_moments_ago_waits_out_the_rest_of_the_window():
    first = _look(1000.0, {"etcd": ("active/running", 0, 100.0), "kube-scheduler": ("active/running", 0, 998.5)})
    assert smoke.settle_seconds(["etcd", "kube-scheduler"], first) == smoke.RESTART_WINDOW_S - 1.5
    steady = _look(1004.6, {"etcd": ("active/running", 0, 100.0), "kube-scheduler": ("active/running", 0, 998.5)})
    assert smoke.judge_units(SPEC.masters[0], ["etcd", "kube-scheduler"], first, steady) == []


def test_a_restart_inside_the_window_is_a_problem_even_between_looks_that_agree_on_nrestarts():
    first = _look(1000.0, {"kube-scheduler": ("active/running", 0, 998.5)})
    restarted = _look(1004.6, {"kube-scheduler": ("active/running", 0, 1003.0)})
    assert smoke.judge_units(SPEC.masters[0], ["kube-scheduler"], first, restarted) == [
        "master-0: kube-scheduler became active again 1.6 s before the last look (restarted within 6 s)"]
    counted = _look(1004.6, {"kube-scheduler": ("active/running", 1, 1003.0)})
    assert smoke.judge_units(SPEC.masters[0], ["kube-scheduler"], first, counted) == [
        "master-0: kube-scheduler restarted 1 times in 6 s"]


def test_a_look_without_the_node_clock_waits_the_whole_window():
    assert smoke.settle_seconds(["etcd"], smoke.parse_unit_show(SHOW)) == smoke.RESTART_WINDOW_S


def test_pings_to_every_peer_at_once_are_told_apart_by_address():
    output = ("== 10.200.2.2\nPING 10.200.2.2: 56 data bytes\n2 packets transmitted, 0 packets received\n"
              "== 10.200.1.2\nPING 10.200.1.2: 56 data bytes\n64 bytes from 10.200.1.2: seq=0\n"
              "2 packets transmitted, 2 packets received, 0% packet loss\n")
    ips = ["10.200.1.2", "10.200.2.2", "10.200.3.2"]
    assert smoke.parse_ping_all(output, ips) == {"10.200.1.2": True, "10.200.2.2": False, "10.200.3.2": False}
    assert "10.200.3.2" in smoke.ping_all_command(ips) and "ping -c 1 -W 1" in smoke.ping_all_command(ips)


def kube_node(name, ready, kubelet="v1.37.2", pod_cidr=None, message="kubelet is posting ready status"):
    return {"metadata": {"name": name}, "spec": {"podCIDR": pod_cidr},
            "status": {"conditions": [{"type": "Ready", "status": ready, "message": message}],
                       "nodeInfo": {"kubeletVersion": kubelet}}}


def test_nodes_ready_at_the_spec_version_with_their_pod_cidr_from_kubectl_json():
    items = [kube_node("ip-10-240-0-20", "True", pod_cidr="10.200.0.0/24"),
             kube_node("ip-10-240-0-21", "False", pod_cidr="10.200.1.0/24", message="container runtime network not ready")]
    check = smoke.judge_nodes_ready(SPEC, json.dumps({"items": items}))
    assert check.status is Status.failed and check.where is Where.real
    assert check.detail == ("worker-1 not Ready (container runtime network not ready); "
                            "worker-2 (ip-10-240-0-22) not registered")
    items = [kube_node(f"ip-10-240-0-2{i}", "True", pod_cidr=f"10.200.{i}.0/24") for i in range(3)]
    assert smoke.judge_nodes_ready(SPEC, json.dumps({"items": items})).status is Status.passed
    items[1] = kube_node("ip-10-240-0-21", "True", kubelet="v1.36.3", pod_cidr="10.200.9.0/24")
    detail = smoke.judge_nodes_ready(SPEC, json.dumps({"items": items})).detail
    assert detail == "worker-1 runs kubelet v1.36.3, not v1.37.2; worker-1 podCIDR 10.200.9.0/24, spec says 10.200.1.0/24"


READYZ = "[+]ping ok\n[+]log ok\n[+]etcd ok\n[+]poststarthook/rbac/bootstrap-roles ok\nreadyz check passed\n"


def test_api_livez_readyz_and_version_through_the_load_balancer():
    checks = smoke.judge_api(SPEC, "ok", READYZ, {"gitVersion": "v1.37.2"})
    assert [c.status for c in checks] == [Status.passed] * 3
    assert checks[1].detail == "4 checks ok"
    failing = READYZ.replace("[+]etcd ok", "[-]etcd failed: reason withheld").replace("readyz check passed",
                                                                                     "readyz check failed")
    checks = smoke.judge_api(SPEC, "ok", failing, {"gitVersion": "v1.36.3"})
    assert checks[1].status is Status.failed and checks[1].detail == "[-]etcd failed: reason withheld"
    assert checks[2].detail == "v1.36.3, wanted v1.37.2"


def test_leader_leases_are_held_by_masters():
    def lease(name, holder):
        return {"metadata": {"name": name}, "spec": {"holderIdentity": holder}}

    leases = {"items": [lease("kube-controller-manager", "ip-10-240-0-11_3f2a"), lease("kube-scheduler", "ip-10-240-0-10_77")]}
    check = smoke.judge_leader_leases(SPEC, json.dumps(leases))
    assert check.status is Status.passed and check.detail == "kube-controller-manager: master-1, kube-scheduler: master-0"
    leases["items"].pop()
    check = smoke.judge_leader_leases(SPEC, json.dumps(leases))
    assert check.status is Status.failed and check.detail == "kube-scheduler: held by nobody"
    assert smoke.judge_leader_leases(SPEC, "").status is Status.failed


def test_kube_proxy_health_and_kubelet_rbac_name_what_is_missing():
    check = smoke.judge_kube_proxies(SPEC, {"worker-0": "200", "worker-1": "503"})
    assert check.status is Status.failed and check.detail == "worker-1: 503; worker-2: not checked"
    assert smoke.judge_kube_proxies(SPEC, {f"worker-{i}": "200" for i in range(3)}).status is Status.passed
    check = smoke.judge_kubelet_rbac({"ClusterRole a": True, "ClusterRoleBinding b": False})
    assert check.status is Status.failed and check.detail == "missing: ClusterRoleBinding b"


def test_secret_stored_encrypted_as_etcdctl_prints_it():
    stored = b"/registry/secrets/default/groundup-smoke\nk8s:enc:aescbc:v1:key1:\x8f\x12binary"
    assert smoke.judge_secret_encrypted(stored).status is Status.passed
    plain = b"/registry/secrets/default/groundup-smoke\nk8s\x00\n\x0c\n\x02v1\x12\x06Secret"
    check = smoke.judge_secret_encrypted(plain)
    assert check.status is Status.failed and "k8s\\x00" in check.detail


def test_pod_ip_and_ping_from_busybox_output():
    assert smoke.parse_container_ip("2: eth0    inet 10.200.1.2/24 brd 10.200.1.255 scope global eth0") == "10.200.1.2"
    assert smoke.parse_container_ip("") is None
    assert smoke.parse_ping("2 packets transmitted, 2 packets received, 0% packet loss")
    assert not smoke.parse_ping("2 packets transmitted, 0 packets received, 100% packet loss")
    assert smoke.parse_ping("1 packets transmitted, 0 packets received, 100% packet loss\n"
                            "1 packets transmitted, 1 packets received, 0% packet loss")


def test_report_names_where_each_check_ran():
    checks = [smoke.passed("etcd", Where.real), smoke.failed("units", Where.real, "master-0: etcd is failed/failed"),
              smoke.not_run("DNS", Where.real, "smoke_workloads is off")]
    report = smoke.report_markdown(SPEC, checks, "https://lb:6443")
    assert report.startswith("# Smoke test of `smoke`: FAILED")
    assert "| units | real | failed | master-0: etcd is failed/failed |" in report
    assert "| DNS | real | not run | smoke_workloads is off |" in report
    assert [c.name for c in smoke.failures(checks)] == ["units"]


def test_each_masters_own_api_server_is_checked_behind_its_cluster_ca_certificate():
    command = smoke.local_readyz_command(SPEC.masters[0])
    assert "/var/lib/kubernetes/ca.pem" in command and "https://127.0.0.1:6443/readyz" in command
    check = smoke.judge_local_api_servers(SPEC, {"master-0": "200", "master-1": "200",
                                                 "master-2": "SSLCertVerificationError certificate verify failed"})
    assert check.status is Status.failed and check.detail == "master-2: SSLCertVerificationError certificate verify failed"
    assert smoke.judge_local_api_servers(SPEC, {f"master-{i}": "200" for i in range(3)}).status is Status.passed
