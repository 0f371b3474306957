"""The NLB is a real load balancer: a moto NLB becomes HAProxy on the sandbox bridge, reached by the
NLB's DNS name from the host and from a node; a target whose listener stops gets no traffic, a
deregistered one is gone; deleting the NLB removes its hosts lines. Timings printed (`pytest -s`).

Uses its own VPC and addresses .70-.72 of the sandbox subnet."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3
import pytest

from sandbox import hostsfile
from tests.e2e.conftest import Sandbox
from tests.e2e.test_sandbox_lifecycle import Cloud, sshd_answers, wait_for

pytestmark = pytest.mark.e2e
TARGETS = ("10.240.0.70", "10.240.0.71")
CLIENT = "10.240.0.72"
PORT = 8000


class Balancer:
    def __init__(self, cloud: Cloud, name: str = "e2e-nlb") -> None:
        env = cloud.sandbox.env
        self.elbv2 = boto3.client("elbv2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
        name = f"{name}-{int(time.time() * 1000) % 10**8}"
        lb = self.elbv2.create_load_balancer(Name=name, Type="network", Subnets=[cloud.subnet])["LoadBalancers"][0]
        self.arn, self.dns_name = lb["LoadBalancerArn"], lb["DNSName"]
        self.group = self.elbv2.create_target_group(
            Name=name, Protocol="TCP", Port=PORT, VpcId=cloud.vpc, TargetType="ip", HealthCheckProtocol="TCP",
            HealthCheckIntervalSeconds=10, HealthyThresholdCount=3, UnhealthyThresholdCount=2,
        )["TargetGroups"][0]["TargetGroupArn"]
        self.elbv2.create_listener(LoadBalancerArn=self.arn, Protocol="TCP", Port=PORT,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": self.group}])

    def targets(self, action: str, *ips: str) -> None:
        getattr(self.elbv2, f"{action}_targets")(TargetGroupArn=self.group,
                                                  Targets=[{"Id": ip, "Port": PORT} for ip in ips])

    def url(self) -> str:
        return f"http://{self.dns_name}:{PORT}/"


def answers(url: str, count: int = 12) -> Counter:
    """Which target answered each of `count` new connections (by the page it serves)."""
    seen: Counter = Counter()
    for _ in range(count):
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                seen[reply.read().decode().strip()] += 1
        except OSError:
            seen["error"] += 1
    return seen


@pytest.fixture(scope="module")
def balancer(sandbox: Sandbox):
    cloud = Cloud(sandbox)
    cloud.clear(*TARGETS, CLIENT)
    try:
        for ip in (*TARGETS, CLIENT):
            cloud.launch(ip)
        for ip in (*TARGETS, CLIENT):
            wait_for(lambda ip=ip: sshd_answers(ip), 60, f"sshd on {ip}")
        for ip in TARGETS:
            serve = (f"mkdir -p /srv && echo {ip} > /srv/index.html && "
                     f"systemd-run --unit=probe python3 -m http.server --directory /srv {PORT}")
            assert sandbox.node_exec(ip, "sh", "-c", serve).returncode == 0
        lb = Balancer(cloud)
    except BaseException:
        cloud.terminate_all()
        raise
    yield cloud, lb
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        lb.elbv2.delete_load_balancer(LoadBalancerArn=lb.arn)
        lb.elbv2.delete_target_group(TargetGroupArn=lb.group)
    except (ClientError, EndpointConnectionError):
        pass  # `sandbox down` already took moto's state away
    finally:
        cloud.terminate_all()


def test_the_nlbs_dns_name_reaches_registered_targets_through_haproxy(sandbox: Sandbox, balancer) -> None:
    cloud, lb = balancer
    started = time.monotonic()
    wait_for(lambda: lb.dns_name in hostsfile.read_block(Path("/etc/hosts").read_text()), 30, "the NLB name in /etc/hosts")
    lb.targets("register", *TARGETS)
    both = wait_for(lambda: set(answers(lb.url(), 8)) == set(TARGETS), 30, "both targets answering")
    print(f"\nnlb: CreateLoadBalancer -> both registered targets answer by DNS name {time.monotonic() - started:.2f} s"
          f" (after RegisterTargets {both:.2f} s)")
    fetch = f"import urllib.request; print(urllib.request.urlopen('{lb.url()}', timeout=2).read().decode())"
    from_node = sandbox.node_exec(CLIENT, "python3", "-c", fetch)
    assert from_node.stdout.strip() in TARGETS, from_node.stderr
    assert lb.dns_name in hostsfile.read_block(sandbox.node_exec(CLIENT, "cat", "/etc/hosts").stdout)


def test_a_target_whose_listener_stops_gets_no_traffic_and_comes_back(sandbox: Sandbox, balancer) -> None:
    cloud, lb = balancer
    assert sandbox.node_exec(TARGETS[0], "systemctl", "stop", "probe").returncode == 0
    shifted = wait_for(lambda: answers(lb.url(), 8) == Counter({TARGETS[1]: 8}), 30, "traffic only to the other target")
    print(f"\nnlb: target's listener stopped -> all traffic to the other {shifted:.2f} s")
    serve = f"systemd-run --unit=probe2 python3 -m http.server --directory /srv {PORT}"
    assert sandbox.node_exec(TARGETS[0], "sh", "-c", serve).returncode == 0
    back = wait_for(lambda: set(answers(lb.url(), 8)) == set(TARGETS), 30, "the target back")
    print(f"nlb: listener back -> target gets traffic again {back:.2f} s")


def test_a_deregistered_target_is_gone(sandbox: Sandbox, balancer) -> None:
    cloud, lb = balancer
    lb.targets("deregister", TARGETS[0])
    gone = wait_for(lambda: answers(lb.url(), 8) == Counter({TARGETS[1]: 8}), 30, "the deregistered target gone")
    print(f"\nnlb: DeregisterTargets -> target gets no new connections {gone:.2f} s")
    status = sandbox.groundup("status")
    assert lb.dns_name in status.stdout and TARGETS[1] in status.stdout, status.stdout


def test_deleting_the_nlb_removes_its_name_everywhere(sandbox: Sandbox, balancer) -> None:
    cloud, lb = balancer
    lb.elbv2.delete_load_balancer(LoadBalancerArn=lb.arn)
    removed = wait_for(lambda: lb.dns_name not in Path("/etc/hosts").read_text(), 30, "hosts line removed")
    print(f"\nnlb: DeleteLoadBalancer -> name gone from /etc/hosts {removed:.2f} s")
    wait_for(lambda: lb.dns_name not in sandbox.node_exec(CLIENT, "cat", "/etc/hosts").stdout, 10,
             "hosts line removed on the node")


def test_down_with_a_serving_nlb_leaves_no_haproxy_address_or_hosts_line_then_up_again(
        sandbox: Sandbox, balancer) -> None:
    from sandbox import lifecycle

    cloud, _ = balancer
    lb = Balancer(cloud, "e2e-down")
    lb.targets("register", TARGETS[1])
    wait_for(lambda: answers(lb.url(), 2) == Counter({TARGETS[1]: 2}), 30, "the new NLB serving")
    result = sandbox.groundup("down")
    assert result.returncode == 0, result.stdout + result.stderr
    left = lifecycle.leftovers_report(sandbox.state)
    assert not any(left.values()), left
    assert not hostsfile.has_block(Path("/etc/hosts")) and lb.dns_name not in Path("/etc/hosts").read_text()
    haproxy = [p for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "comm").exists()
               and (p / "comm").read_text().strip() == "haproxy" and str(sandbox.state) in (p / "cmdline").read_text()]
    assert not haproxy
    lifecycle.up(sandbox.state)
