"""SSE framing and what wakes a stream up."""

from __future__ import annotations

import json

import pytest

from web.live import ChangeWaiter, sse_comment, sse_event


def test_event_framing_is_one_data_line() -> None:
    frame = sse_event("portfolios", {"text": "two\nlines", "n": 1})
    assert frame.endswith(b"\n\n")
    lines = frame.decode().split("\n")
    assert lines[0] == "event: portfolios"
    assert lines[1].startswith("data: ")
    assert json.loads(lines[1][len("data: ") :]) == {"text": "two\nlines", "n": 1}
    assert lines[2:] == ["", ""]
    assert sse_comment("keep-alive") == b": keep-alive\n\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSubscription:
    def __init__(self, messages: list[bool | Exception]) -> None:
        self.messages = messages
        self.closed = False

    async def next_message(self, wait_s: float) -> bool:
        item = self.messages.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


class Subscriber:
    def __init__(self, *outcomes: FakeSubscription | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> FakeSubscription:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_with_a_subscription_only_messages_wake_it_unless_polling() -> None:
    subscription = FakeSubscription([True, False, False])
    waiter = ChangeWaiter(Subscriber(subscription), poll_s=0.01)
    assert await waiter.wait(poll=False) is True  # a message
    assert await waiter.wait(poll=False) is False  # timed out: nothing changed
    assert await waiter.wait(poll=True) is True  # data from the tables: poll anyway
    assert waiter.subscribed


async def test_without_redis_it_polls() -> None:
    waiter = ChangeWaiter(None, poll_s=0.01)
    assert await waiter.wait(poll=False) is True
    assert not waiter.subscribed


async def test_a_broken_subscription_falls_back_to_polling_and_is_retried_later() -> None:
    clock = Clock()
    broken = FakeSubscription([ConnectionError("gone")])
    healthy = FakeSubscription([True])
    subscriber = Subscriber(broken, ConnectionError("still down"), healthy)
    waiter = ChangeWaiter(subscriber, poll_s=0.01, resubscribe_s=5, clock=clock)

    assert await waiter.wait(poll=False) is True  # the error counts as "maybe changed"
    assert broken.closed and not waiter.subscribed
    assert await waiter.wait(poll=False) is True  # polling; no retry before 5 s
    assert subscriber.calls == 1
    clock.now = 5
    assert await waiter.wait(poll=False) is True  # retry fails: polls, next retry at 10
    assert subscriber.calls == 2
    clock.now = 9.9
    await waiter.wait(poll=False)
    assert subscriber.calls == 2
    clock.now = 10
    assert await waiter.wait(poll=False) is True  # resubscribed, and a message arrived
    assert subscriber.calls == 3 and waiter.subscribed
    await waiter.close()
    assert healthy.closed


@pytest.mark.parametrize("poll", [True, False])
async def test_subscribe_failure_on_first_use_polls(poll: bool) -> None:
    waiter = ChangeWaiter(Subscriber(OSError("refused")), poll_s=0.01)
    assert await waiter.wait(poll=poll) is True
    assert not waiter.subscribed
