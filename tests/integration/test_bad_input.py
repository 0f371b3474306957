"""Bad input, as a new user gives it: one table of malformed or dangerous specs, arguments, environments
and artifact stores. Every case runs the real `groundup` in a fresh process with an empty HOME and asserts:
a non-zero exit (2 for user errors), a message naming what is wrong, no traceback, an answer in seconds,
no AWS resource created, and the artifact store's bytes unchanged."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.awsprobe import clients
from tests.integration.test_cli import UNREACHABLE, moto_user, new_user_env, run_as_user

pytestmark = pytest.mark.integration

CLUSTER = "bad-input"
GOOD_SPEC = f"name: {CLUSTER}\nregion: us-east-2\nworker_count: 1\n"
USER_ERROR_SECONDS = 15.0
STORE_CASE_SECONDS = 60.0  # these import Prefect and talk to the test's Prefect server


def alias_bomb() -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdef", "bcdefg"):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return f"name: {CLUSTER}\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One bad input. In `args` and `env`, {spec} is the case's spec file, {tmp} its scratch directory,
    {moto} the moto endpoint, {hang} an endpoint that accepts connections and never answers, {home} HOME."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    spec: str | bytes = GOOD_SPEC
    env: dict[str, str | None] = field(default_factory=dict)
    store: str | None = None
    code: int = 2
    prefect: bool = False


def spec_case(id: str, spec: str | bytes, *expect: str, command: str = "validate") -> Case:
    return Case(id, (command, "{spec}"), expect, spec=spec)


CASES: list[Case] = [
    # --- spec files ---
    spec_case("empty-file", "", "empty", "name"),
    spec_case("comment-only", "# my cluster\n", "empty"),
    spec_case("duplicate-key", "name: one\nname: two\n", "duplicate key 'name'", "line 2", command="build"),
    spec_case("duplicate-nested-key", f"name: {CLUSTER}\nssh:\n  user: ubuntu\n  user: admin\n",
              "duplicate key 'user'", "line 4", command="plan"),
    spec_case("ssh-user-injection", f"name: {CLUSTER}\nssh:\n  user: 'root; id'\n", "ssh.user", "POSIX login name",
              command="build"),
    spec_case("ssh-user-option", f"name: {CLUSTER}\nssh:\n  user: -oProxyCommand=sh\n", "ssh.user"),
    spec_case("no-name", "region: us-east-2\n", "name: required"),
    spec_case("not-yaml", "name: [unclosed\n", "not valid YAML", "line 2"),
    spec_case("yaml-list", "- name: x\n", "mapping"),
    spec_case("yaml-scalar", "k8s please\n", "mapping"),
    spec_case("python-tag", "name: !!python/object/apply:os.system ['id']\n", "python/object"),
    spec_case("alias-bomb", alias_bomb(), "alias bomb", command="plan"),
    spec_case("binary", b"name: \xff\xfe\x00\x01", "UTF-8"),
    spec_case("two-documents", f"name: {CLUSTER}\n---\nname: other\n", "single document"),
    spec_case("list-as-key", "? [a]\n: 1\n", "mapping key"),
    spec_case("huge-file", f"name: {CLUSTER}\n" + "#" * (2 << 20), "larger than"),
    spec_case("even-masters", f"name: {CLUSTER}\nmaster_count: 2\n", "master_count", "odd", command="build"),
    spec_case("pods-in-vpc", f"name: {CLUSTER}\npod_cidr: 172.31.128.0/17\n", "pod_cidr", "overlaps vpc_cidr"),
    spec_case("ip-outside-subnet", f"name: {CLUSTER}\nmaster_count: 1\nmaster_ips: [10.9.9.9]\n",
              "master_ips", "outside subnet_cidr", command="plan"),
    spec_case("unknown-field", f"name: {CLUSTER}\nwokrer_count: 2\n", "wokrer_count", "Extra inputs"),
    spec_case("cluster-domain-injection", f"name: {CLUSTER}\ncluster_domain: 'x; rm -rf /'\n", "cluster_domain"),
    spec_case("mirror-file-url", f"name: {CLUSTER}\nrelease_mirror: file:///etc/passwd\n", "release_mirror"),
    spec_case("reserved-tag", f"name: {CLUSTER}\ntags:\n  aws:owner: me\n", "tags", "aws:"),
    spec_case("name-too-long", "name: " + "k" * 33 + "\n", "name", "32 characters"),
    spec_case("name-not-a-string", "name: 42\n", "name", "string"),
    Case("spec-is-directory", ("validate", "{tmp}"), ("is a directory",)),
    Case("spec-missing", ("plan", "{tmp}/nope.yaml"), ("no such file",)),
    # --- command-line arguments ---
    Case("unknown-phase", ("build", "{spec}", "--phases", "network,bogus"), ("bogus", "choose from")),
    Case("empty-phases", ("build", "{spec}", "--phases", ""), ("none given",)),
    Case("comma-phases", ("build", "{spec}", "--phases", ","), ("none given",)),
    Case("output-dir-missing", ("kubeconfig", "{spec}", "-o", "/no/such/dir/kc"), ("/no/such/dir", "does not exist")),
    Case("output-is-directory", ("kubeconfig", "{spec}", "-o", "{tmp}"), ("is a directory",)),
    Case("output-empty", ("kubeconfig", "{spec}", "-o", ""), ("empty path",)),
    Case("output-under-file", ("kubeconfig", "{spec}", "-o", "{spec}/kc"), ("not a directory",)),
    Case("unknown-command", ("launch", "{spec}"), ("invalid choice",)),
    Case("no-spec-argument", ("plan",), ("required", "spec")),
    Case("unknown-option", ("plan", "{spec}", "--force"), ("unrecognized arguments", "--force")),
    Case("bad-cron", ("deploy", "{spec}", "--nightly", "every night"), ("--nightly", "5 fields")),
    # --- environment: credentials, endpoint, region, Prefect server ---
    Case("no-credentials", ("plan", "{spec}"), ("no AWS credentials", "AWS_ACCESS_KEY_ID"),
         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}),
    Case("half-credentials", ("build", "{spec}"), ("AWS_SECRET_ACCESS_KEY",), env={"AWS_SECRET_ACCESS_KEY": None}),
    Case("missing-profile", ("teardown", "{spec}"), ("'nightly-ci'", "AWS_PROFILE"),
         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": "nightly-ci"}),
    Case("endpoint-refuses-plan", ("plan", "{spec}"), ("127.0.0.1:9", "does not answer"),
         env={"AWS_ENDPOINT_URL": UNREACHABLE}),
    Case("endpoint-refuses-build", ("build", "{spec}", "--phases", "network"), ("127.0.0.1:9", "does not answer"),
         env={"AWS_ENDPOINT_URL": UNREACHABLE}),
    Case("endpoint-refuses-teardown", ("teardown", "{spec}"), ("127.0.0.1:9", "does not answer"),
         env={"AWS_ENDPOINT_URL": UNREACHABLE}),
    Case("endpoint-hangs", ("plan", "{spec}"), ("did not answer", "GetCallerIdentity"), env={"AWS_ENDPOINT_URL": "{hang}"}),
    Case("endpoint-not-a-url", ("plan", "{spec}"), ("AWS_ENDPOINT_URL", "not-a-url"),
         env={"AWS_ENDPOINT_URL": "not-a-url"}),
    Case("endpoint-not-aws", ("plan", "{spec}"), ("GetCallerIdentity", "failed"), env={"AWS_ENDPOINT_URL": "{prefect}"},
         prefect=True),
    Case("region-unknown", ("build", "{spec}"), ("'us-east-9' is not an AWS region",),
         spec=f"name: {CLUSTER}\nregion: us-east-9\n"),
    Case("region-not-enabled", ("plan", "{spec}"), ("'ap-east-1'", "not enabled"),
         spec=f"name: {CLUSTER}\nregion: ap-east-1\n"),
    Case("prefect-server-down", ("build", "{spec}"), ("PREFECT_API_URL", "does not answer"),
         env={"PREFECT_API_URL": UNREACHABLE + "/api"}),
    Case("prefect-url-garbage", ("teardown", "{spec}"), ("PREFECT_API_URL", "does not answer"),
         env={"PREFECT_API_URL": "prefect-please"}),
    # --- the artifact store ---
    Case("store-path-is-a-file", ("build", "{spec}"), ("artifact store directory", "cannot be created"),
         env={"GROUNDUP_ARTIFACTS": "{spec}"}, prefect=True),
    Case("store-parent-is-a-file", ("build", "{spec}"), ("artifact store directory", "GROUNDUP_ARTIFACTS"),
         env={"GROUNDUP_ARTIFACTS": "{spec}/artifacts"}, prefect=True),
    Case("store-unwritable", ("build", "{spec}"), ("/sys/groundup-artifacts", "cannot be created"),
         env={"GROUNDUP_ARTIFACTS": "/sys/groundup-artifacts"}, prefect=True),
    Case("store-corrupt-ca-key", ("build", "{spec}"), ("pki/ca-key.pem", "cannot load private key"),
         store="corrupt-ca-key", prefect=True),
    Case("store-wrong-passphrase", ("build", "{spec}", "--phases", "network,compute"), ("wrong passphrase",),
         store="foreign-passphrase", prefect=True),
    Case("store-plaintext-key", ("build", "{spec}"), ("refusing a plaintext key",), store="plaintext-ssh-key",
         prefect=True),
    Case("store-corrupt-kubeconfig", ("kubeconfig", "{spec}", "-o", "{tmp}/admin.kubeconfig"),
         ("cannot decrypt artifact",), store="corrupt-kubeconfig", code=1, prefect=True),
    Case("store-no-kubeconfig", ("kubeconfig", "{spec}", "-o", "{tmp}/admin.kubeconfig"),
         ("no admin kubeconfig stored", "run build-cluster first"), prefect=True),
    Case("store-block-unreachable", ("kubeconfig", "{spec}", "-o", "{tmp}/admin.kubeconfig"),
         ("artifact store s3://gone", "cannot be read"), store="s3-unreachable", code=1, prefect=True),
]


# --- store set-ups: (home store root) -> cleanup ----------------------------------------------------


def _store(root: Path, passphrase: bytes):
    from prefect.filesystems import LocalFileSystem

    from blocks.artifact_store import ArtifactStore

    return ArtifactStore(LocalFileSystem(basepath=str(root)), CLUSTER, passphrase)


def _our_passphrase() -> bytes:
    from blocks.artifact_store import load_passphrase

    return load_passphrase()


def _rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def corrupt_ca_key(root: Path) -> None:
    store = _store(root, _our_passphrase())
    store.write_private_key("pki/ca-key.pem", _rsa_key())
    path = root / CLUSTER / "pki" / "ca-key.pem"
    pem = path.read_bytes()
    path.write_bytes(pem[:60] + b"AAAA" + pem[64:])


def foreign_passphrase(root: Path) -> None:
    _store(root, b"someone else's passphrase").write_private_key(f"ssh/{CLUSTER}.id_rsa", _rsa_key())


def plaintext_ssh_key(root: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = _rsa_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    path = root / CLUSTER / "ssh" / f"{CLUSTER}.id_rsa"
    path.parent.mkdir(parents=True)
    path.write_bytes(pem)


def corrupt_kubeconfig(root: Path) -> None:
    store = _store(root, _our_passphrase())
    store.write("kubeconfigs/admin.kubeconfig", b"apiVersion: v1\nkind: Config\n", secret=True)
    path = root / CLUSTER / "kubeconfigs" / "admin.kubeconfig"
    blob = path.read_bytes()
    path.write_bytes(blob[:-10] + b"0123456789")


def s3_unreachable(root: Path) -> Callable[[], None]:
    from blocks.setup import configure_s3_store, remove_store_block

    configure_s3_store("gone", region="us-east-2", endpoint_url=UNREACHABLE, access_key_id="x", secret_access_key="y")
    return remove_store_block


STORE_SETUPS: dict[str, Callable[[Path], Callable[[], None] | None]] = {
    "corrupt-ca-key": corrupt_ca_key,
    "foreign-passphrase": foreign_passphrase,
    "plaintext-ssh-key": plaintext_ssh_key,
    "corrupt-kubeconfig": corrupt_kubeconfig,
    "s3-unreachable": s3_unreachable,
}


# --- what every case must leave as it found ----------------------------------------------------------


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (missing roots are empty)."""
    digest = {}
    for root in roots:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif root.is_file():
            digest[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
    return digest


def groundup_resources() -> dict[str, int]:
    """Anything a groundup step creates, whatever the cluster's name."""
    ec2, elbv2 = clients()
    tagged = [{"Name": "tag-key", "Values": ["groundup/cluster"]}]
    found = {
        "vpcs": len(ec2.describe_vpcs(Filters=tagged)["Vpcs"]),
        "key_pairs": len(ec2.describe_key_pairs()["KeyPairs"]),
        "instances": sum(len(r["Instances"]) for page in ec2.get_paginator("describe_instances").paginate()
                         for r in page["Reservations"]),
        "security_groups": len(ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]),
        "load_balancers": len(elbv2.describe_load_balancers()["LoadBalancers"]),
        "target_groups": len(elbv2.describe_target_groups()["TargetGroups"]),
    }
    return {kind: n for kind, n in found.items() if n}


@pytest.fixture(scope="module")
def hanging_endpoint():
    """An HTTP endpoint on loopback that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture(scope="module")
def prefect_url(prefect_harness) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def test_the_table_is_big_enough_and_covers_every_kind_of_input():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.store for c in CASES if c.store} == set(STORE_SETUPS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_fast_with_a_clear_message(case: Case, tmp_path, aws, hanging_endpoint, request):
    home = tmp_path / "home"
    scratch = tmp_path / "scratch"
    home.mkdir()
    scratch.mkdir()
    spec = scratch / "spec.yaml"
    spec.write_bytes(case.spec if isinstance(case.spec, bytes) else case.spec.encode())
    prefect_url = request.getfixturevalue("prefect_url") if case.prefect else None
    values = {"spec": str(spec), "tmp": str(scratch), "moto": aws, "hang": hanging_endpoint, "home": str(home),
              "prefect": prefect_url or ""}
    settings: dict[str, str | None] = {**moto_user(aws), "AWS_DEFAULT_REGION": "us-east-2"}
    if prefect_url:
        settings["PREFECT_API_URL"] = prefect_url
    settings.update({k: v.format(**values) if v is not None else None for k, v in case.env.items()})
    env = new_user_env(home, **settings)
    store_root = home / ".groundup" / "artifacts"
    cleanup = STORE_SETUPS[case.store](store_root) if case.store else None
    watched = [store_root, spec] + ([Path(settings["GROUNDUP_ARTIFACTS"])] if settings.get("GROUNDUP_ARTIFACTS") else [])
    before = tree_digest(*watched)
    try:
        result, elapsed = run_as_user([a.format(**values) for a in case.args], env, timeout=120)
    finally:
        if cleanup:
            cleanup()
    output = result.stdout + result.stderr
    assert result.returncode == case.code, output[-3000:]
    for expected in case.expect:
        assert expected in output, f"{expected!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output
    assert elapsed < (STORE_CASE_SECONDS if case.prefect else USER_ERROR_SECONDS), f"took {elapsed:.1f} s"
    assert groundup_resources() == {}
    assert tree_digest(*watched) == before, "the artifact store (or spec) changed"
    assert not (scratch / "admin.kubeconfig").exists()
