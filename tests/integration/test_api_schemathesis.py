"""Schemathesis over the OpenAPI document the real read API serves: no response is a 5xx.

A real portfolio-manager worker (embedded broker, PostgreSQL, Redis, the seeded fills of
``test_api.py``) serves ``/api/v1/openapi.json``; schemathesis loads it from there and
generates requests for every documented operation, valid and invalid ones, once with a
valid bearer token (so requests get past the guard into the parameter parsing, the
table routing and the mirror reads) and once with whatever credentials it makes up.
Examples are bounded so the whole test takes well under a minute.

The live stream is left out of the authenticated pass only: with a valid token it is an
endless response by design, not a request that completes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage
from tests.integration.harness import StageProcess
from tests.integration.test_api import login, prepare_database, seeded_deployment

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 20
STREAM = "/api/v1/stream"


def fuzz(
    schema: Any, base_url: str, headers: dict[str, str], skip: set[str]
) -> tuple[Counter[int], list[str]]:
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in skip:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=10
                )
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code} "
                        f"{response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # NEGATIVE on an operation with no parameters: nothing can be made invalid.
                assert mode is GenerationMode.NEGATIVE, operation.path
    return statuses, server_errors


def test_schemathesis_finds_no_5xx_on_the_served_openapi_document(
    fresh_broker: EmbeddedBroker, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    asyncio.run(prepare_database(pg_url))
    deployment = seeded_deployment(fresh_broker, tmp_path, pg_url, redis_url)
    worker = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    try:
        worker.wait_ready(require="mirror in sync")
        base_url = f"http://127.0.0.1:{worker.port}"
        token = login(worker.port, "alice")
        schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
        paths = {r.ok().path for r in schema.get_all_operations()}
        assert "/api/v1/portfolios/{strategy_id}" in paths
        assert not any(p.startswith("/router") for p in paths)  # Faust's views are off

        started = time.monotonic()
        authed, authed_errors = fuzz(
            schema, base_url, {"Authorization": f"Bearer {token}"}, skip={STREAM}
        )
        anonymous, anonymous_errors = fuzz(schema, base_url, {}, skip=set())

        print(
            f"fuzzed in {time.monotonic() - started:.1f} s: with a token",
            dict(authed),
            "without",
            dict(anonymous),
        )
        assert authed_errors + anonymous_errors == []
        # The authenticated pass really got past the guard and the parameter checks.
        assert authed[200] > 0 and authed[400] > 0
        assert anonymous[401] > 0
        assert sum(authed.values()) + sum(anonymous.values()) > 200
    finally:
        worker.stop()
