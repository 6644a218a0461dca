"""Property-based fuzzing of the server against its own OpenAPI document (schemathesis, a bounded number of
examples per operation): no request, valid or not, may produce a 5xx, a response that breaks the documented
schema, or an undocumented content type."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.api.conftest import MAIN_KEY


@pytest.fixture(scope="module")
def api_schema(start_server, tmp_path_factory):
    keys = tmp_path_factory.mktemp("fuzz_keys") / "keys.txt"
    keys.write_text(MAIN_KEY + "\n")
    # small generation limits keep each fuzzed request short on a tiny CPU model
    server = start_server(api_keys_file=keys, max_tokens_limit=8, max_tokens_default=4, max_queue=64)
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {MAIN_KEY}"},
        timeout=60,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
