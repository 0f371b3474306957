"""What the AWS tasks share: one retry policy, a fresh client context per task, change logging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from groundup.aws.core import Context, is_transient, make_context
from groundup.spec import ClusterSpec

F = TypeVar("F", bound=Callable[..., Any])


def retry_if_transient(task, task_run, state) -> bool:
    """Retry throttling and eventual consistency; fail at once on errors no retry can cure."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is not None and is_transient(exc)


def aws_task(name: str, **options: Any) -> Callable[[F], F]:
    """A Prefect task for one AWS step: retried on transient errors, result persisted for flow-run retries."""
    defaults = dict(
        name=name,
        retries=4,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_if_transient,
        persist_result=True,
    )
    return task(**{**defaults, **options})


def context(spec: ClusterSpec) -> Context:
    """Clients are made inside each task: never passed between tasks (they break cache keys)."""
    return make_context(spec)


def log_changes(ctx: Context) -> None:
    logger = get_run_logger()
    for change in ctx.changes:
        if change.action == "exists":
            logger.debug(str(change))
        else:
            logger.info(str(change))


def run_step(spec: ClusterSpec, step: Callable[..., Any], *args: Any) -> Any:
    """Run one look-then-act step with a fresh context and log what it changed."""
    ctx = context(spec)
    try:
        return step(ctx, *args)
    finally:
        log_changes(ctx)
