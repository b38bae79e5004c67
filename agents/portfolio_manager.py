"""Placeholder until the stage lands."""

from alpha_panda.runtime import StageContext


def register(ctx: StageContext) -> None:
    return None
