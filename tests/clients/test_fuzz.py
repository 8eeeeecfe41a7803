"""schemathesis against each service through the gateway, on PostgreSQL, with an authorized
token: no server error, and every response's status, content type, headers and body as the
document says. Bounded in time; a failure prints the request that reproduces it."""

import os
import pathlib
import subprocess

import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
SECONDS = os.environ.get("FUZZ_SECONDS", "75")


@pytest.mark.parametrize("service", ["payments", "accounts"])
def test_the_service_conforms_to_its_document(stack, service, tmp_path):
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="schemathesis_hooks",
        PYTHONPATH=str(pathlib.Path(__file__).parent),
        FUZZ_GATEWAY=stack.gateway,
        FUZZ_ADMIN_EMAIL=ADMIN_EMAIL,
        FUZZ_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NO_COLOR="1",
    )
    result = subprocess.run(
        ["schemathesis", "run", f"{stack.gateway}/{service}/openapi.json",
         "--checks", CHECKS, "--max-time", SECONDS, "--request-timeout", "15",
         "--suppress-health-check", "all", "--warnings", "off"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    print(result.stdout[-20000:])
    print(result.stderr[-4000:])
    assert result.returncode == 0, f"schemathesis found failures on {service} (see above)"
