"""What the bootstrap renders for each node: one case per component against the flags and fields it
needs, every path a unit reads accounted for, configs with the right kinds, the same bytes every time."""

from __future__ import annotations

import json
import shlex
import tomllib
from ipaddress import IPv4Network

import pytest
import yaml

from groundup.bootstrap import NodePlan, node_plan, node_units
from groundup.bootstrap.addons import cluster_manifests
from groundup.distribution import node_layout
from groundup.kube_flags import available_minors, known_flags
from groundup.releases import role_releases
from groundup.spec import ClusterSpec, Node, Role

API = "k8s-test-0123456789.elb.eu-west-1.amazonaws.com"
SPEC = ClusterSpec(
    name="render-test", region="eu-west-1", vpc_cidr=IPv4Network("10.0.0.0/16"), subnet_cidr=IPv4Network("10.0.1.0/24"),
    master_count=3, worker_count=2, pod_cidr=IPv4Network("10.200.0.0/16"),
    worker_pod_cidrs=[IPv4Network("10.200.7.0/24"), IPv4Network("10.200.9.0/24")],
    service_cidr=IPv4Network("10.96.0.0/24"), cluster_domain="k8s.example", coredns_version="1.13.1",
)
MASTER, WORKER = SPEC.masters[1], SPEC.workers[1]


def plan_of(node: Node) -> NodePlan:
    return node_plan(SPEC, node, API)


def exec_start(unit_text: str) -> list[str]:
    """The ExecStart command line of a unit, continuation lines joined, split as systemd does."""
    joined = unit_text.replace("\\\n", " ")
    line = next(l for l in joined.splitlines() if l.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart=").replace("%%", "%").replace("$$", "$"))


def flags_of(unit_text: str) -> dict[str, str | bool]:
    flags: dict[str, str | bool] = {}
    for arg in exec_start(unit_text)[1:]:
        assert arg.startswith("--"), f"positional argument {arg!r}"
        name, sep, value = arg[2:].partition("=")
        assert name not in flags, f"--{name} given twice"
        flags[name] = value if sep else True
    return flags


def unit_flags(node: Node, unit: str) -> dict[str, str | bool]:
    return flags_of(plan_of(node).unit_file(unit).data.decode())


def service_options(node: Node, unit: str) -> dict[str, str]:
    text = plan_of(node).unit_file(unit).data.decode().replace("\\\n", " ")
    return dict(l.split("=", 1) for l in text.splitlines() if "=" in l and not l.startswith("ExecStart="))


def distributed(node: Node, relpath: str) -> str:
    return node_layout(node)[relpath][0]


def yaml_file(node: Node, path: str) -> dict:
    return yaml.safe_load(plan_of(node).file(path).data)


# --- one case per component: the flags it needs, with values taken from the spec ---------------------

def etcd_expectations(m: Node) -> dict:
    cert, key = distributed(m, f"pki/etcd-{m.short_name}.pem"), distributed(m, f"pki/etcd-{m.short_name}-key.pem")
    ca = distributed(m, "pki/ca.pem")
    return {
        "name": m.short_name, "cert-file": cert, "key-file": key, "peer-cert-file": cert, "peer-key-file": key,
        "trusted-ca-file": ca, "peer-trusted-ca-file": ca, "client-cert-auth": True, "peer-client-cert-auth": True,
        "initial-cluster": ",".join(f"{x.short_name}=https://{x.private_ip}:2380" for x in SPEC.masters),
        "initial-cluster-state": "new", "initial-advertise-peer-urls": f"https://{m.private_ip}:2380",
        "advertise-client-urls": f"https://{m.private_ip}:2379", "data-dir": "/var/lib/etcd",
    }


def apiserver_expectations(m: Node) -> dict:
    ca, cert = distributed(m, "pki/ca.pem"), distributed(m, "pki/master-kubernetes.pem")
    key = distributed(m, "pki/master-kubernetes-key.pem")
    return {
        "etcd-servers": ",".join(f"https://{x.private_ip}:2379" for x in SPEC.masters),
        "etcd-cafile": ca, "etcd-certfile": cert, "etcd-keyfile": key,
        "encryption-provider-config": distributed(m, "encryption-config.yaml"),
        "service-cluster-ip-range": str(SPEC.service_cidr),
        "service-account-key-file": distributed(m, "pki/service-account.pem"),
        "service-account-signing-key-file": distributed(m, "pki/service-account-key.pem"),
        "service-account-issuer": f"https://{API}:6443",
        "authorization-mode": "Node,RBAC", "client-ca-file": ca,
        "kubelet-client-certificate": cert, "kubelet-client-key": key, "kubelet-certificate-authority": ca,
        "tls-cert-file": cert, "tls-private-key-file": key,
        "audit-policy-file": "/var/lib/kubernetes/audit-policy.yaml", "audit-log-path": "/var/log/kubernetes/audit.log",
        "advertise-address": str(m.private_ip), "bind-address": "0.0.0.0", "secure-port": "6443",
    }


def controller_manager_expectations(m: Node) -> dict:
    ca = distributed(m, "pki/ca.pem")
    return {
        "cluster-cidr": str(SPEC.pod_cidr), "allocate-node-cidrs": "false", "service-cluster-ip-range": str(SPEC.service_cidr),
        "cluster-signing-cert-file": ca, "cluster-signing-key-file": distributed(m, "pki/ca-key.pem"),
        "root-ca-file": ca, "service-account-private-key-file": distributed(m, "pki/service-account-key.pem"),
        "kubeconfig": distributed(m, "kubeconfigs/kube-controller-manager.kubeconfig"),
        "leader-elect": "true", "use-service-account-credentials": "true",
    }


def kubelet_expectations(w: Node) -> dict:
    return {"config": "/var/lib/kubelet/kubelet-config.yaml", "kubeconfig": distributed(w, f"kubeconfigs/{w.name}.kubeconfig"),
            "register-node": "true", "hostname-override": w.hostname}


UNIT_CASES = [
    pytest.param(MASTER, "etcd", etcd_expectations, id="etcd"),
    pytest.param(MASTER, "kube-apiserver", apiserver_expectations, id="kube-apiserver"),
    pytest.param(MASTER, "kube-controller-manager", controller_manager_expectations, id="kube-controller-manager"),
    pytest.param(MASTER, "kube-scheduler", lambda m: {"config": "/etc/kubernetes/config/kube-scheduler.yaml"},
                 id="kube-scheduler"),
    pytest.param(WORKER, "containerd", lambda w: {"config": "/etc/containerd/config.toml"}, id="containerd"),
    pytest.param(WORKER, "kubelet", kubelet_expectations, id="kubelet"),
    pytest.param(WORKER, "kube-proxy", lambda w: {"config": "/var/lib/kube-proxy/kube-proxy-config.yaml"},
                 id="kube-proxy"),
]


@pytest.mark.parametrize(("node", "unit", "expected"), UNIT_CASES)
def test_each_unit_has_the_flags_its_component_needs(node, unit, expected):
    flags = unit_flags(node, unit)
    wanted = expected(node)
    assert {k: flags.get(k) for k in wanted} == wanted


def test_etcd_start_waits_for_quorum():
    options = service_options(MASTER, "etcd")
    assert options["Type"] == "notify"
    assert int(options["TimeoutStartSec"]) >= 120


def test_etcd_data_dir_is_created_owner_only_on_masters_only():
    assert {(d.path, d.mode) for d in plan_of(MASTER).dirs} >= {("/var/lib/etcd", 0o700)}
    assert not any(d.path == "/var/lib/etcd" for d in plan_of(WORKER).dirs)


def test_apiserver_names_every_master_once_in_etcd_servers_and_its_own_ip_as_advertise_address():
    for master in SPEC.masters:
        flags = unit_flags(master, "kube-apiserver")
        assert flags["advertise-address"] == str(master.private_ip)
        assert sorted(flags["etcd-servers"].split(",")) == sorted(f"https://{m.private_ip}:2379" for m in SPEC.masters)


K8S_UNITS = [pytest.param(n, u, id=u) for n, u in [(MASTER, "kube-apiserver"), (MASTER, "kube-controller-manager"),
                                                   (MASTER, "kube-scheduler"), (WORKER, "kubelet"), (WORKER, "kube-proxy")]]


@pytest.mark.parametrize(("node", "unit"), K8S_UNITS)
def test_every_flag_is_one_the_real_component_accepts(node, unit):
    unknown = set(unit_flags(node, unit)) - known_flags(unit, SPEC.kubernetes_version)
    assert not unknown, f"{unit} {SPEC.kubernetes_version} has no flag(s) {sorted(unknown)}"


@pytest.mark.parametrize("minor", available_minors())
def test_what_is_rendered_for_each_minor_with_flag_data_uses_only_that_releases_flags(minor):
    """A flag a newer or older minor removed must not be rendered for it (tables from the real --help)."""
    from groundup.versions import LINES

    spec = SPEC.model_copy(update={"kubernetes_version": LINES[minor].latest})
    for node, unit in [(spec.masters[1], "kube-apiserver"), (spec.masters[1], "kube-controller-manager"),
                       (spec.masters[1], "kube-scheduler"), (spec.workers[1], "kubelet"), (spec.workers[1], "kube-proxy")]:
        flags = flags_of(node_plan(spec, node, API).unit_file(unit).data.decode())
        unknown = set(flags) - known_flags(unit, spec.kubernetes_version)
        assert not unknown, f"{unit} {spec.kubernetes_version} has no flag(s) {sorted(unknown)}"


# --- configs: parse, apiVersion/kind, the fields each component needs -------------------------------

CONFIG_KINDS = [
    (MASTER, "/etc/kubernetes/config/kube-scheduler.yaml", "kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration"),
    (MASTER, "/var/lib/kubernetes/audit-policy.yaml", "audit.k8s.io/v1", "Policy"),
    (WORKER, "/var/lib/kubelet/kubelet-config.yaml", "kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    (WORKER, "/var/lib/kube-proxy/kube-proxy-config.yaml", "kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
]


@pytest.mark.parametrize(("node", "path", "api_version", "kind"), CONFIG_KINDS, ids=[c[1] for c in CONFIG_KINDS])
def test_config_files_have_their_api_version_and_kind(node, path, api_version, kind):
    data = yaml_file(node, path)
    assert (data["apiVersion"], data["kind"]) == (api_version, kind)


def test_scheduler_config_elects_a_leader_with_its_kubeconfig():
    data = yaml_file(MASTER, "/etc/kubernetes/config/kube-scheduler.yaml")
    assert data["leaderElection"]["leaderElect"] is True
    assert data["clientConnection"]["kubeconfig"] == distributed(MASTER, "kubeconfigs/kube-scheduler.kubeconfig")


def test_audit_policy_logs_metadata_and_never_request_bodies():
    rules = yaml_file(MASTER, "/var/lib/kubernetes/audit-policy.yaml")["rules"]
    levels = [r["level"] for r in rules]
    assert set(levels) <= {"None", "Metadata"} and levels[-1] == "Metadata"


@pytest.mark.parametrize("worker", SPEC.workers, ids=lambda w: w.short_name)
def test_kubelet_config_serves_its_own_cert_with_webhook_auth_and_cluster_dns(worker):
    cfg = yaml_file(worker, "/var/lib/kubelet/kubelet-config.yaml")
    authn = cfg["authentication"]
    assert authn["anonymous"]["enabled"] is False and authn["webhook"]["enabled"] is True
    assert authn["x509"]["clientCAFile"] == distributed(worker, "pki/ca.pem")
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["clusterDomain"] == SPEC.cluster_domain
    assert cfg["clusterDNS"] == [str(SPEC.cluster_dns_ip)]
    assert cfg["podCIDR"] == str(worker.pod_cidr)
    assert cfg["tlsCertFile"] == distributed(worker, f"pki/{worker.name}.pem")
    assert cfg["tlsPrivateKeyFile"] == distributed(worker, f"pki/{worker.name}-key.pem")
    assert cfg["containerRuntimeEndpoint"] == "unix:///var/run/containerd/containerd.sock"
    assert cfg["cgroupDriver"] == "systemd"
    assert cfg["resolvConf"] in plan_of(worker).made_on_node


def test_kube_proxy_config_uses_iptables_for_the_cluster_pod_range():
    cfg = yaml_file(WORKER, "/var/lib/kube-proxy/kube-proxy-config.yaml")
    assert cfg["clientConnection"]["kubeconfig"] == distributed(WORKER, "kubeconfigs/kube-proxy.kubeconfig")
    assert cfg["mode"] == "iptables"
    assert cfg["clusterCIDR"] == str(SPEC.pod_cidr)


def test_containerd_config_is_its_own_version_with_runc_under_the_systemd_cgroup_driver():
    cfg = tomllib.loads(plan_of(WORKER).file("/etc/containerd/config.toml").data.decode())
    cri = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    runc = cri["containerd"]["runtimes"]["runc"]
    runc_install = next(i.path for r in role_releases(SPEC, Role.worker) if r.artifact == "runc" for i in r.installs)
    assert cfg["version"] == 4 and cfg["imports"] == ["/etc/containerd/conf.d/*.toml"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": True, "BinaryName": runc_install}
    assert cri["cni"] == {"bin_dirs": ["/opt/cni/bin"], "conf_dir": "/etc/cni/net.d"}
    assert cfg["plugins"]["io.containerd.cri.v1.images"]["pinned_images"] == {"sandbox": "registry.k8s.io/pause:3.10.2"}


@pytest.mark.parametrize(("kubernetes", "containerd", "config_version", "pause"),
                         [("1.37.2", "2.4.2", 4, "3.10.2"), ("1.36.3", "2.3.7", 4, "3.10.2"),
                          ("1.35.4", "2.2.9", 3, "3.10.1")])
def test_each_supported_minor_gets_its_containerds_config_version_and_its_pause_image(kubernetes, containerd,
                                                                                      config_version, pause):
    spec = SPEC.model_copy(update={"kubernetes_version": kubernetes, "containerd_version": containerd})
    cfg = tomllib.loads(node_plan(spec, spec.workers[0], API).file("/etc/containerd/config.toml").data.decode())
    assert cfg["version"] == config_version
    assert cfg["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == f"registry.k8s.io/pause:{pause}"


@pytest.mark.parametrize("worker", SPEC.workers, ids=lambda w: w.short_name)
def test_cni_bridge_hands_out_addresses_from_the_workers_own_pod_range(worker):
    conf = json.loads(plan_of(worker).file("/etc/cni/net.d/10-bridge.conf").data)
    assert (conf["type"], conf["isGateway"], conf["ipMasq"]) == ("bridge", True, True)
    assert conf["ipam"]["type"] == "host-local"
    assert conf["ipam"]["ranges"] == [[{"subnet": str(worker.pod_cidr)}]]
    loopback = json.loads(plan_of(worker).file("/etc/cni/net.d/99-loopback.conf").data)
    assert loopback["type"] == "loopback"


CNI_PLUGINS_1_6_SUPPORTED = {"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
"""containernetworking/cni v1.2 (vendored by plugins 1.6): `version.All`."""


def test_cni_version_is_one_plugins_1_6_accept():
    for path in ("/etc/cni/net.d/10-bridge.conf", "/etc/cni/net.d/99-loopback.conf"):
        assert json.loads(plan_of(WORKER).file(path).data)["cniVersion"] in CNI_PLUGINS_1_6_SUPPORTED


def test_kernel_settings_load_br_netfilter_and_forward_ipv4():
    plan = plan_of(WORKER)
    assert "br_netfilter" in plan.file("/etc/modules-load.d/groundup.conf").data.decode().split()
    sysctls = dict(line.replace(" ", "").split("=") for line in plan.file("/etc/sysctl.d/90-groundup.conf").data.decode().splitlines())
    assert sysctls["net.ipv4.ip_forward"] == "1"


def test_kernel_steps_tolerate_a_kernel_that_refuses_and_the_unit_stays_active():
    text = plan_of(WORKER).unit_file("groundup-node-prep").data.decode()
    starts = [l.removeprefix("ExecStart=") for l in text.splitlines() if l.startswith("ExecStart=")]
    kernel = [s for s in starts if any(tool in s for tool in ("swapoff", "modules-load", "sysctl"))]
    assert len(kernel) == 3 and all(s.startswith("-") for s in kernel)
    options = service_options(WORKER, "groundup-node-prep")
    assert (options["Type"], options["RemainAfterExit"]) == ("oneshot", "yes")


# --- start order and inputs ---------------------------------------------------------------------------

def test_units_start_in_dependency_order():
    assert plan_of(MASTER).units[:2] == ("etcd", "kube-apiserver")
    worker_units = plan_of(WORKER).units
    assert worker_units.index("groundup-node-prep") < worker_units.index("containerd") < worker_units.index("kubelet")


def test_no_unit_requires_another_so_a_restart_never_spreads():
    for node in (MASTER, WORKER):
        for unit in plan_of(node).units:
            assert "Requires" not in service_options(node, unit) and "BindsTo" not in service_options(node, unit)


def installed_paths(node: Node) -> tuple[set[str], set[str]]:
    """(files, directories) the node's release artifacts install."""
    files, dirs = set(), set()
    for release in role_releases(SPEC, node.role):
        for install in release.installs:
            (dirs if install.is_directory else files).add(install.path)
    return files, dirs


def is_installed(node: Node, path: str) -> bool:
    files, dirs = installed_paths(node)
    return path in files or any(path.startswith(d.rstrip("/") + "/") for d in dirs)


@pytest.mark.parametrize("node", SPEC.nodes, ids=lambda n: n.short_name)
def test_every_unit_input_is_rendered_distributed_or_installed(node):
    plan = plan_of(node)
    rendered = {f.path for f in plan.files}
    sent = {path for path, _ in node_layout(node).values()}
    for unit, inputs in plan.unit_inputs.items():
        stray = {p for p in inputs if p not in rendered and p not in sent and not is_installed(node, p)}
        assert not stray, f"{node.short_name} {unit} reads {sorted(stray)}, which nothing puts on the node"


def named_paths(value) -> set[str]:
    """Every absolute path (or unix:// socket path) in a config's values or a flag's comma-separated value."""
    if isinstance(value, dict):
        return set().union(*(named_paths(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(named_paths(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {p.removeprefix("unix://") for p in value.split(",") if p.startswith(("/", "unix:///"))}
    return set()


def config_data(path: str, data: bytes):
    if path.endswith(".toml"):
        return tomllib.loads(data.decode())
    if path.endswith(".conf") and data.lstrip().startswith(b"{"):
        return json.loads(data)
    return yaml.safe_load(data)


@pytest.mark.parametrize("node", [SPEC.masters[0], SPEC.workers[0]], ids=lambda n: n.role.value)
def test_every_path_a_unit_or_its_config_names_is_an_input_a_created_dir_or_made_on_the_node(node):
    plan = plan_of(node)
    rendered = {f.path: f.data for f in plan.files}
    created = {d.path for d in plan.dirs}
    installed_files, installed_dirs = installed_paths(node)
    config_dirs = {p.rsplit("/", 1)[0] for p in rendered}
    for unit in node_units(SPEC, node, API):
        named = named_paths(dict(unit.flags))
        for path in unit.inputs & rendered.keys():
            if not path.endswith(".service") and "modules-load.d" not in path and "sysctl.d" not in path:
                data = config_data(path, rendered[path])
                if data.get("kind") != "Policy":
                    named |= named_paths(data)
        allowed = unit.inputs | created | plan.made_on_node.keys() | installed_dirs | config_dirs
        named = {p.rsplit("/", 1)[0] if "*" in p else p for p in named}  # a drop-in glob names its directory
        assert named <= allowed, f"{unit.name} names {sorted(named - allowed)}"


# --- cluster manifests -------------------------------------------------------------------------------

def manifest_objects() -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o
            for _, stream in cluster_manifests(SPEC) for o in yaml.safe_load_all(stream)}


def test_apiserver_may_reach_kubelets_as_user_kubernetes():
    objects = manifest_objects()
    role = objects[("ClusterRole", "system:kube-apiserver-to-kubelet")]
    assert {"nodes/proxy", "nodes/log", "nodes/stats", "nodes/metrics"} <= set(role["rules"][0]["resources"])
    binding = next(o for (kind, _), o in objects.items()
                   if kind == "ClusterRoleBinding" and o["roleRef"]["name"] == "system:kube-apiserver-to-kubelet")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kubernetes"}]


def test_coredns_serves_the_cluster_domain_at_the_cluster_dns_ip_with_the_specs_image():
    objects = manifest_objects()
    service = objects[("Service", "kube-dns")]
    assert service["spec"]["clusterIP"] == str(SPEC.cluster_dns_ip)
    deployment = objects[("Deployment", "coredns")]
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"registry.k8s.io/coredns/coredns:v{SPEC.coredns_version}"
    assert pod["serviceAccountName"] == "coredns" and ("ServiceAccount", "coredns") in objects
    assert f"kubernetes {SPEC.cluster_domain} " in objects[("ConfigMap", "coredns")]["data"]["Corefile"]
    binding = objects[("ClusterRoleBinding", "system:coredns")]
    assert binding["roleRef"]["name"] == "system:coredns" and ("ClusterRole", "system:coredns") in objects


def test_rbac_is_applied_before_coredns():
    assert [name for name, _ in cluster_manifests(SPEC)] == ["apiserver-to-kubelet RBAC", "CoreDNS"]


# --- determinism -------------------------------------------------------------------------------------

def test_the_same_spec_renders_the_same_bytes():
    again = ClusterSpec.model_validate(json.loads(SPEC.model_dump_json()))
    for node, twin in zip(SPEC.nodes, again.nodes):
        first, second = node_plan(SPEC, node, API), node_plan(again, twin, API)
        assert [(f.path, f.data, f.mode) for f in first.files] == [(f.path, f.data, f.mode) for f in second.files]
        assert (first.units, dict(first.unit_inputs), first.dirs) == (second.units, dict(second.unit_inputs), second.dirs)
    assert cluster_manifests(SPEC) == cluster_manifests(again)


def test_a_changed_field_changes_only_the_files_that_depend_on_it():
    wider = SPEC.model_copy(update={"service_cidr": IPv4Network("10.97.0.0/24")})
    before = set(plan_of(MASTER).files)
    changed = {f.path for f in node_plan(wider, MASTER, API).files if f not in before}
    assert changed == {"/etc/systemd/system/kube-apiserver.service", "/etc/systemd/system/kube-controller-manager.service"}


def test_each_workers_node_gets_the_spec_pod_range_once_registered_and_a_different_one_is_a_conflict():
    from groundup.bootstrap.addons import pod_cidr_patches

    def node(name, cidr=None):
        return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {}}

    first, second = SPEC.workers
    patches, missing, conflicts = pod_cidr_patches(SPEC, json.dumps({"items": [node(first.hostname)]}))
    assert json.loads(patches[first.hostname]) == {"spec": {"podCIDR": "10.200.7.0/24", "podCIDRs": ["10.200.7.0/24"]}}
    assert missing == [f"worker-1 ({second.hostname})"] and conflicts == []
    done = json.dumps({"items": [node(first.hostname, "10.200.7.0/24"), node(second.hostname, "10.200.8.0/24")]})
    patches, missing, conflicts = pod_cidr_patches(SPEC, done)
    assert patches == {} and missing == []
    assert conflicts[0].startswith(f"worker-1: its Node {second.hostname} has podCIDR 10.200.8.0/24, the spec gives it "
                                   "10.200.9.0/24")


def test_the_api_server_is_killed_15_s_after_a_stop_not_left_waiting_a_minute_for_watches():
    text = plan_of(MASTER).unit_file("kube-apiserver").data.decode()
    assert "TimeoutStopSec=15" in text.splitlines()
