"""Preflight for every command that talks to AWS: credentials, endpoint, region, caller identity.

Runs before any flow starts and answers within seconds: each call has a short connect and
read timeout and a single attempt (an answer that says "throttled, try later" is retried for a few
seconds). A failure is a `PreflightError` whose message is one paragraph saying what is wrong and
what to do.
"""

from __future__ import annotations

import difflib
import random
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

PREFLIGHT_TIMEOUT_S = 4.0
PREFLIGHT_CONFIG = Config(
    connect_timeout=PREFLIGHT_TIMEOUT_S,
    read_timeout=PREFLIGHT_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": 1},
)
CREDENTIAL_HELP = (
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile from "
    "`aws configure`; for the local sandbox, source /var/lib/groundup-sandbox/env."
)
# Answers that mean "later": retried with backoff (the total stays within the preflight's seconds).
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
     "RequestThrottled", "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}
)
THROTTLING_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)  # six attempts within about 8 s
REJECTED_CODES = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
     "UnrecognizedClientException", "AuthFailure", "InvalidAccessKeyId", "IncompleteSignature"}
)


class PreflightError(RuntimeError):
    """AWS cannot be used as configured; the message says what to change."""


@dataclass(frozen=True)
class Identity:
    """Who groundup acts as, and where."""

    account: str
    arn: str
    region: str
    endpoint: str
    credential_source: str
    seconds: float

    def __str__(self) -> str:
        return (f"AWS account {self.account} as {self.arn} (credentials from {self.credential_source}), "
                f"region {self.region}, endpoint {self.endpoint}")


def preflight(region: str, session: Any | None = None) -> Identity:
    """Check that AWS answers as this process is configured; return the caller identity."""
    started = time.monotonic()
    session = session or _session(region)
    source = _credential_source(session)
    _check_region_known(session, region)
    try:
        sts = session.client("sts", region_name=region, config=PREFLIGHT_CONFIG)
        ec2 = session.client("ec2", region_name=region, config=PREFLIGHT_CONFIG)
    except ValueError as exc:
        raise PreflightError(
            f"{exc}: AWS_ENDPOINT_URL (or the profile's endpoint_url) must be a URL such as "
            f"http://127.0.0.1:5000, or unset to use AWS itself."
        ) from None
    who = _call(sts, "GetCallerIdentity", source, sts.get_caller_identity)
    regions = _call(ec2, "DescribeRegions", source, ec2.describe_regions, AllRegions=True)["Regions"]
    _check_region_enabled(region, regions, ec2.meta.endpoint_url)
    return Identity(account=who["Account"], arn=who["Arn"], region=region, endpoint=ec2.meta.endpoint_url,
                    credential_source=source, seconds=time.monotonic() - started)


def _session(region: str) -> Any:
    try:
        return boto3.session.Session(region_name=region)
    except ProfileNotFound as exc:
        raise PreflightError(
            f"AWS profile {exc.kwargs.get('profile')!r} (from AWS_PROFILE) is not in ~/.aws/config or "
            f"~/.aws/credentials. Create it with `aws configure --profile NAME`, or unset AWS_PROFILE and "
            f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        ) from None


def _credential_source(session: Any) -> str:
    try:
        credentials = session.get_credentials()
    except PartialCredentialsError as exc:
        raise PreflightError(
            f"incomplete AWS credentials: {exc.kwargs.get('provider')} gives no {exc.kwargs.get('cred_var')}. "
            f"{CREDENTIAL_HELP}"
        ) from None
    except (CredentialRetrievalError, ProfileNotFound, BotoCoreError) as exc:
        raise PreflightError(f"cannot read AWS credentials: {exc}. {CREDENTIAL_HELP}") from None
    if credentials is None:
        raise PreflightError(f"no AWS credentials found (environment, profile, or instance role). {CREDENTIAL_HELP}")
    return getattr(credentials, "method", None) or "the AWS credential chain"


def _check_region_known(session: Any, region: str) -> None:
    """A region botocore does not know has no AWS endpoint (moto and AWS agree on the list)."""
    known = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    if region not in known:
        close = difflib.get_close_matches(region, sorted(known), n=3) or sorted(known)[:3]
        raise PreflightError(
            f"region {region!r} is not an AWS region (did you mean {', '.join(close)}?). "
            f"Fix `region:` in the spec; if the region is new, upgrade boto3."
        )


def _check_region_enabled(region: str, regions: list[dict], endpoint: str) -> None:
    by_name = {r["RegionName"]: r for r in regions}
    if region not in by_name:
        raise PreflightError(
            f"region {region!r} does not exist at {endpoint} (it offers {', '.join(sorted(by_name)[:6])}, ...). "
            f"Fix `region:` in the spec."
        )
    if by_name[region].get("OptInStatus") == "not-opted-in":
        raise PreflightError(
            f"region {region!r} is not enabled for this AWS account. Enable it in the AWS console "
            f"(Account > AWS Regions) or choose another `region:` in the spec."
        )


def _call(client: Any, operation: str, source: str, fn: Any, **kwargs: Any) -> dict:
    """One AWS call with the preflight's timeouts, its failure turned into advice. Throttling and
    service-side hiccups are retried (jittered backoff, about 8 s at most); nothing else is."""
    endpoint = client.meta.endpoint_url
    for delay in THROTTLING_BACKOFF_S:
        try:
            return _attempt(client, operation, source, fn, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in THROTTLING_CODES:
                raise _advice(exc, operation, source, endpoint) from None
            time.sleep(delay * (0.5 + random.random() / 2))
    try:
        return _attempt(client, operation, source, fn, **kwargs)
    except ClientError as exc:
        raise _advice(exc, operation, source, endpoint) from None


def _advice(exc: ClientError, operation: str, source: str, endpoint: str) -> PreflightError:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    if code in REJECTED_CODES:
        return PreflightError(
            f"AWS rejected the credentials from {source} ({code}: {message}). Check or renew the access "
            f"key, session token or profile. {CREDENTIAL_HELP}"
        )
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return PreflightError(
            f"the credentials from {source} may not call {operation} ({code}). groundup needs EC2, "
            f"ELBv2 and STS permissions; ask your AWS administrator for them."
        )
    return PreflightError(f"{operation} at {endpoint} failed: {code}: {message}")


def _attempt(client: Any, operation: str, source: str, fn: Any, **kwargs: Any) -> dict:
    """One call; every failure but an AWS error answer becomes advice at once."""
    endpoint = client.meta.endpoint_url
    try:
        return fn(**kwargs)
    except NoCredentialsError:
        raise PreflightError(f"no AWS credentials found. {CREDENTIAL_HELP}") from None
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise PreflightError(
            f"the AWS endpoint {endpoint} does not answer ({_reason(exc)}; {operation} tried once with a "
            f"{PREFLIGHT_TIMEOUT_S:.0f} s timeout). Check AWS_ENDPOINT_URL (a local moto server must be "
            f"running), your network and proxy settings, or the spec's region."
        ) from None
    except ReadTimeoutError:
        raise PreflightError(
            f"the AWS endpoint {endpoint} accepted a connection but did not answer {operation} within "
            f"{PREFLIGHT_TIMEOUT_S:.0f} s. Check that AWS_ENDPOINT_URL points at an AWS API (or moto) server."
        ) from None
    except NoRegionError:
        raise PreflightError("no AWS region: set `region:` in the spec.") from None
    except ResponseParserError:
        raise PreflightError(
            f"{operation} at {endpoint} failed: the answer is not an AWS API response. Check that "
            f"AWS_ENDPOINT_URL points at an AWS API (or moto) server, not another web service."
        ) from None
    except BotoCoreError as exc:
        raise PreflightError(
            f"{operation} at {endpoint} failed: {exc}. Check that AWS_ENDPOINT_URL points at an AWS API "
            f"(or moto) server."
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "kwargs", {}).get("error", "") or exc)
    for marker, reason in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                           ("Name or service not known", "host name does not resolve"),
                           ("nodename nor servname", "host name does not resolve"),
                           ("Temporary failure in name resolution", "host name does not resolve"),
                           ("Network is unreachable", "network unreachable")):
        if marker in text:
            return reason
    return "no connection"
