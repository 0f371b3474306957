"""Preflight without a network: credentials, regions, and how AWS's refusals are explained."""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.stub import Stubber

from groundup.preflight import PreflightError, preflight


@pytest.fixture
def bare_env(monkeypatch, tmp_path):
    """No AWS settings at all, an empty home, and no instance metadata service to ask."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return monkeypatch


def refusal(region: str = "us-east-2", session=None) -> str:
    with pytest.raises(PreflightError) as info:
        preflight(region, session=session)
    return str(info.value)


def test_no_credentials_says_which_variables_to_set(bare_env):
    message = refusal()
    assert "no AWS credentials" in message and "AWS_ACCESS_KEY_ID" in message and "AWS_PROFILE" in message


def test_half_a_key_pair_names_the_missing_half(bare_env):
    bare_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    assert "AWS_SECRET_ACCESS_KEY" in refusal()


def test_unknown_profile_is_named(bare_env):
    bare_env.setenv("AWS_PROFILE", "staging")
    message = refusal()
    assert "'staging'" in message and "aws configure --profile" in message


def test_region_aws_does_not_have_is_refused_before_any_call(bare_env):
    bare_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    message = refusal("us-east-9")
    assert "'us-east-9' is not an AWS region" in message and "us-east-1" in message


def stubbed_session(sts_error: str | None = None, regions: list[dict] | None = None):
    """A boto3 session whose clients answer from botocore's Stubber (AWS itself cannot be reached here)."""
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                    region_name="us-east-2")
    made = {}
    original = session.client

    def client(service, **kwargs):
        made[service] = c = original(service, **kwargs)
        stub = Stubber(c)
        if service == "sts":
            if sts_error:
                stub.add_client_error("get_caller_identity", service_error_code=sts_error, service_message="no")
            else:
                stub.add_response("get_caller_identity", {"Account": "123456789012", "UserId": "AID",
                                                          "Arn": "arn:aws:iam::123456789012:user/dev"})
        else:
            stub.add_response("describe_regions", {"Regions": regions or []})
        stub.activate()
        return c

    session.client = client
    return session


@pytest.mark.parametrize("code", ["InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_rejected_credentials_are_explained(bare_env, code):
    message = refusal(session=stubbed_session(sts_error=code))
    assert "rejected the credentials" in message and code in message


def test_missing_permission_is_explained(bare_env):
    assert "ask your AWS administrator" in refusal(session=stubbed_session(sts_error="AccessDenied"))


def test_region_not_enabled_for_the_account(bare_env):
    regions = [{"RegionName": "us-east-2", "OptInStatus": "not-opted-in"}]
    assert "not enabled for this AWS account" in refusal(session=stubbed_session(regions=regions))


def test_region_missing_at_the_endpoint(bare_env):
    regions = [{"RegionName": "eu-west-1", "OptInStatus": "opt-in-not-required"}]
    assert "does not exist at" in refusal(session=stubbed_session(regions=regions))


def test_identity_is_returned_when_everything_answers(bare_env):
    regions = [{"RegionName": "us-east-2", "OptInStatus": "opt-in-not-required"}]
    identity = preflight("us-east-2", session=stubbed_session(regions=regions))
    assert identity.account == "123456789012"
    assert "arn:aws:iam::123456789012:user/dev" in str(identity) and "us-east-2" in str(identity)

