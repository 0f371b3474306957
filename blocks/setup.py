"""Point the artifact store at S3 (or back at a local directory) by saving the `groundup-artifacts` block.

From a shell, with the Prefect API the flows use (`PREFECT_API_URL`):

    python -m blocks.setup s3 --bucket my-team-groundup --region us-east-2 [--folder clusters]
    python -m blocks.setup s3 --bucket test --endpoint-url http://127.0.0.1:5000   # a moto/MinIO server
    python -m blocks.setup local --path /srv/groundup/artifacts
    python -m blocks.setup show

Credentials come from the usual AWS chain (environment, profile, instance role) unless
`--access-key-id`/`--secret-access-key` are given; those are then kept in the block, encrypted
by the Prefect server. From Python:

    from blocks.setup import configure_s3_store
    configure_s3_store("my-team-groundup", region="us-east-2")

The passphrase that encrypts keys at rest stays in the Secret block `groundup-artifacts-passphrase`;
every machine that runs the flows against the same bucket must use the same Prefect server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect.filesystems import LocalFileSystem

from blocks.artifact_store import FILESYSTEM_BLOCK_TYPES, STORE_BLOCK, describe_filesystem, load_filesystem, private_dir


def configure_s3_store(
    bucket: str,
    *,
    folder: str = "",
    region: str | None = None,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    create_bucket: bool = False,
) -> "S3Bucket":  # noqa: F821
    """Save a prefect-aws S3Bucket as the `groundup-artifacts` block (replacing any other store block)."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    credentials = AwsCredentials(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )
    block = S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=credentials)
    if create_bucket:
        _create_bucket(credentials, bucket, region)
    _remove_other_store_blocks(keep="s3-bucket")
    block.save(STORE_BLOCK, overwrite=True, _sync=True)
    return block


def configure_local_store(path: str | Path) -> LocalFileSystem:
    """Save a LocalFileSystem at `path` (created owner-only with its parents) as the `groundup-artifacts` block."""
    base = private_dir(Path(path).expanduser().resolve())
    block = LocalFileSystem(basepath=str(base))
    _remove_other_store_blocks(keep="local-file-system")
    block.save(STORE_BLOCK, overwrite=True, _sync=True)
    return block


def remove_store_block() -> None:
    """Delete every `groundup-artifacts` block: the store falls back to $GROUNDUP_ARTIFACTS."""
    _remove_other_store_blocks(keep=None)


def _remove_other_store_blocks(keep: str | None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for block_type in FILESYSTEM_BLOCK_TYPES:
            if block_type == keep:
                continue
            try:
                document = client.read_block_document_by_name(name=STORE_BLOCK, block_type_slug=block_type)
            except ObjectNotFound:
                continue
            client.delete_block_document(document.id)


def _create_bucket(credentials, bucket: str, region: str | None) -> None:
    s3 = credentials.get_client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket in existing:
        return
    if region and region != "us-east-1":
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    else:
        s3.create_bucket(Bucket=bucket)


def describe_store() -> str:
    """Where artifacts go now, in one line."""
    return describe_filesystem(load_filesystem())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blocks.setup", description="Configure the groundup artifact store.")
    sub = parser.add_subparsers(dest="command", required=True)
    s3 = sub.add_parser("s3", help="store artifacts in an S3 bucket")
    s3.add_argument("--bucket", required=True)
    s3.add_argument("--folder", default="")
    s3.add_argument("--region")
    s3.add_argument("--endpoint-url")
    s3.add_argument("--access-key-id")
    s3.add_argument("--secret-access-key")
    s3.add_argument("--create-bucket", action="store_true")
    local = sub.add_parser("local", help="store artifacts in a local directory")
    local.add_argument("--path", required=True)
    sub.add_parser("reset", help="remove the block: back to $GROUNDUP_ARTIFACTS or ~/.groundup/artifacts")
    sub.add_parser("show", help="print where artifacts are stored")
    args = parser.parse_args(argv)
    if args.command == "s3":
        configure_s3_store(
            args.bucket,
            folder=args.folder,
            region=args.region,
            endpoint_url=args.endpoint_url,
            access_key_id=args.access_key_id,
            secret_access_key=args.secret_access_key,
            create_bucket=args.create_bucket,
        )
    elif args.command == "local":
        configure_local_store(args.path)
    elif args.command == "reset":
        remove_store_block()
    print(f"groundup artifacts: {describe_store()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
