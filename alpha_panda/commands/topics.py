"""`alpha-panda topics create|list`."""

from __future__ import annotations

import argparse
import asyncio

from alpha_panda.admin import ensure_topics
from alpha_panda.settings import get_settings
from alpha_panda.topics import all_topic_layout


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("topics", help="create or list the registered topics")
    sub = parser.add_subparsers(dest="topics_command", required=True)
    sub.add_parser("create", help="create every topic and DLQ (idempotent)").set_defaults(
        handler=create
    )
    sub.add_parser("list", help="print the registry").set_defaults(handler=list_topics)


def create(args: argparse.Namespace) -> int:
    report = asyncio.run(ensure_topics(get_settings()))
    for line in report.lines():
        print(line)
    return 1 if report.mismatched else 0


def list_topics(args: argparse.Namespace) -> int:
    for name, partitions in all_topic_layout().items():
        print(f"{name}\t{partitions}")
    return 0
