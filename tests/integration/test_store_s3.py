"""The artifact store on prefect-aws S3Bucket against the moto server, and the store's Prefect blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from blocks.artifact_store import (
    PASSPHRASE_BLOCK,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    get_store,
    is_encrypted,
    load_filesystem,
    load_passphrase,
)
from blocks.setup import configure_local_store, configure_s3_store, describe_store, remove_store_block
from groundup import pki
from groundup.encryption import ensure_encryption_config
from groundup.kubeconfig import ensure_kubeconfig, kubeconfig_requests
from groundup.spec import ClusterSpec, KeyAlgorithm

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-2"


@pytest.fixture
def bucket(moto_server) -> str:
    name = f"groundup-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3", endpoint_url=moto_server.endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def s3_bucket(moto_server, bucket):
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    credentials = AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION,
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_server.endpoint),
    )
    return S3Bucket(bucket_name=bucket, bucket_folder="teams", credentials=credentials)


def raw_object(moto_server, bucket: str, key: str) -> bytes:
    s3 = boto3.client(
        "s3", endpoint_url=moto_server.endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def fresh_process_filesystem() -> str:
    """The type of `load_filesystem()` in a new interpreter that has imported nothing else, and whether it
    imported prefect-aws (~0.9 s of CPU, needed only for an s3-bucket block)."""
    from prefect.settings import PREFECT_API_URL

    code = ("import sys; from blocks.artifact_store import load_filesystem; "
            "assert 'prefect_aws' not in sys.modules; kind = type(load_filesystem()).__name__; "
            "print(kind, 'prefect_aws' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_round_trip_on_s3(s3_bucket, moto_server, bucket):
    store = ArtifactStore(s3_bucket, "s3demo", b"s3-passphrase")
    assert not store.exists("pki/ca.pem")
    with pytest.raises(ArtifactNotFound):
        store.read("pki/ca.pem")
    assert store.write("pki/ca.pem", b"public") == "s3demo/pki/ca.pem"
    store.write("kubeconfigs/admin.kubeconfig", b"secret kubeconfig", secret=True)
    key = pki.generate_private_key(KeyAlgorithm.rsa2048)
    store.write_private_key("pki/ca-key.pem", key)
    assert store.exists("pki/ca.pem")
    assert store.read("pki/ca.pem") == b"public"
    assert store.read("kubeconfigs/admin.kubeconfig") == b"secret kubeconfig"
    assert pki.private_key_pem(store.read_private_key("pki/ca-key.pem")) == pki.private_key_pem(key)
    assert raw_object(moto_server, bucket, "teams/s3demo/pki/ca.pem") == b"public"
    assert is_encrypted(raw_object(moto_server, bucket, "teams/s3demo/kubeconfigs/admin.kubeconfig"))
    assert raw_object(moto_server, bucket, "teams/s3demo/pki/ca-key.pem").startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    with pytest.raises(ArtifactError, match="wrong passphrase"):
        ArtifactStore(s3_bucket, "s3demo", b"other").read_private_key("pki/ca-key.pem")


def test_a_full_pki_on_s3_is_reused_on_the_second_run(s3_bucket):
    spec = ClusterSpec(name="s3pki", master_count=1, worker_count=1, pki={"key_algorithm": "ecdsa-p256"})
    store = ArtifactStore(s3_bucket, spec.name, b"s3-passphrase")
    endpoint = "nlb.example.com"

    def run() -> set[str]:
        outcomes = [pki.ensure_ca(spec, store)]
        outcomes += [pki.ensure_certificate(spec, r, store) for r in pki.leaf_requests(spec, endpoint, {}).values()]
        outcomes += [ensure_kubeconfig(spec, r, store) for r in kubeconfig_requests(spec, endpoint).values()]
        outcomes.append(ensure_encryption_config(store))
        return {o.name for o in outcomes if o.changed}

    assert len(run()) == 1 + 8 + 5 + 1
    assert run() == set()


def test_passphrase_is_created_once_in_a_secret_block(prefect_harness):
    from prefect.blocks.system import Secret

    first = load_passphrase()
    assert len(first) >= 32
    assert load_passphrase() == first
    assert Secret.load(PASSPHRASE_BLOCK).get() == first.decode()


def test_the_store_block_switches_between_s3_and_local(prefect_harness, moto_server, bucket, tmp_path):
    try:
        configure_s3_store(
            bucket, folder="clusters", region=REGION, endpoint_url=moto_server.endpoint,
            access_key_id="testing", secret_access_key="testing",
        )
        from prefect_aws import S3Bucket

        assert isinstance(load_filesystem(), S3Bucket)
        assert fresh_process_filesystem() == "S3Bucket True"
        assert describe_store() == f"s3://{bucket}/clusters"
        store = get_store("switch")
        store.write("pki/ca.pem", b"on s3")
        assert raw_object(moto_server, bucket, "clusters/switch/pki/ca.pem") == b"on s3"

        configure_local_store(tmp_path / "local")
        assert describe_store() == f"local directory {tmp_path / 'local'}"
        get_store("switch").write("pki/ca.pem", b"on disk")
        assert (tmp_path / "local/switch/pki/ca.pem").read_bytes() == b"on disk"
    finally:
        remove_store_block()
    assert describe_store().startswith("local directory ")
    assert fresh_process_filesystem() == "LocalFileSystem False"
    assert "local" not in describe_store().split("/")[-1]


def test_configure_s3_store_can_create_the_bucket(prefect_harness, moto_server):
    name = f"groundup-new-{uuid.uuid4().hex[:6]}"
    try:
        configure_s3_store(
            name, region=REGION, endpoint_url=moto_server.endpoint,
            access_key_id="testing", secret_access_key="testing", create_bucket=True,
        )
        get_store("created").write("x", b"1")
        assert raw_object(moto_server, name, "created/x") == b"1"
    finally:
        remove_store_block()
