"""The HTTP APIs fuzzed from their own OpenAPI document (schemathesis): never a 5xx.

The real app serves a fresh SQLite store under uvicorn on a free loopback port (in a
thread: schemathesis speaks plain blocking HTTP). Every operation of the document, the
admin API with its token and the public subscription API, gets valid and invalid requests;
the only check is the one this suite promises: no answer is a server error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from service.config import Settings

from .helpers import (
    ADMIN_TOKEN,
    AUTH,
    base_url,
    loopback_server,
    make_settings,
    wait_until_blocking,
)

# Bounded so the whole suite stays quick: each operation gets this many valid and as
# many invalid requests.
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from service.web import create_app

    folder = tmp_path_factory.mktemp("fuzz")
    app_settings = make_settings(folder, outbox_dir=folder / "outbox")
    server = loopback_server(create_app(app_settings))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_until_blocking(lambda: server.started or not thread.is_alive(), 10, 0.01, "uvicorn")
    assert server.started, "uvicorn did not start"
    try:
        yield base_url(server)
    finally:
        server.should_exit = True
        thread.join(30)


def _document() -> dict[str, object]:
    """The app's OpenAPI document, as `/openapi.json` serves it (no store needed)."""
    from service.web import create_app

    return create_app(Settings(_env_file=None, admin_token=ADMIN_TOKEN)).openapi()


schema = schemathesis.openapi.from_dict(_document())


# schemathesis's own strategies for some schemas draw from `random`; hypothesis warns about
# that inside the test, which would otherwise fail it (the warning is not about our code).
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_fuzzed_request_gets_a_server_error(case, served_app):
    case.call_and_validate(base_url=served_app, headers=AUTH, checks=[not_a_server_error])
