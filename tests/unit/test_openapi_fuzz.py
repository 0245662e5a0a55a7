"""schemathesis against the generated OpenAPI document, on a real socket with a fake backend: no 5xx, and every
response matches the document (status codes, content types, bodies). Examples are bounded to keep it quick."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from test_api import ALICE
from test_http_server import serve

from reconciler.server.http import HttpServer
from reconciler.server.openapi import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    s = serve()
    yield s
    s.stop()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, server: HttpServer) -> None:
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {ALICE}"})
