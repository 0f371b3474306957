"""The phases of `build-cluster`, in the guide's order (pure: the CLI checks names before Prefect starts)."""

from __future__ import annotations

BUILD_PHASES: tuple[str, ...] = ("network", "compute", "pki", "distribute", "bootstrap", "smoke")


def parse_phases(text: str | list[str] | None) -> list[str]:
    """`network,compute` -> ['network', 'compute'] in build order; raises ValueError naming unknown ones."""
    if text is None:
        return list(BUILD_PHASES)
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = [p.strip() for p in items if p.strip()]
    if not wanted:
        raise ValueError(f"phases: none given; choose from {', '.join(BUILD_PHASES)}")
    unknown = [p for p in wanted if p not in BUILD_PHASES]
    if unknown:
        raise ValueError(f"phases: unknown {', '.join(unknown)}; choose from {', '.join(BUILD_PHASES)}")
    return [p for p in BUILD_PHASES if p in wanted]
