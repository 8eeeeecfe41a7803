"""schemathesis against each service through the gateway, on PostgreSQL, with an authorized
token: no server error, and every response's status, content type, headers and body as the
document says. Bounded in time; a failure prints the request that reproduces it."""

import os
import pathlib
import subprocess

import httpx
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
    try:
        result = subprocess.run(
            ["schemathesis", "run", f"{stack.gateway}/{service}/openapi.json",
             "--checks", CHECKS, "--max-time", SECONDS, "--request-timeout", "15",
             "--suppress-health-check", "all", "--warnings", "off"],
            env=env, capture_output=True, text=True, cwd=tmp_path,
        )
    finally:
        if service == "payments":
            delete_webhook_endpoints(stack)
    print(result.stdout[-20000:])
    print(result.stderr[-4000:])
    assert result.returncode == 0, f"schemathesis found failures on {service} (see above)"


def delete_webhook_endpoints(stack):
    """The fuzzer registers webhook endpoints at whatever URLs it makes up (this stack allows
    private and http ones, for test_webhooks.py's receivers), most of them dead: each event
    then owes them an attempt that waits out the timeout, again and again on the retry
    schedule, and with dozens of them the deliverer's slots are full of those for minutes.
    They are deleted with their deliveries, as an operator would, so that the tests after
    this one see only their own endpoints."""
    headers = {"Authorization": f"Bearer {stack.admin_token()}"}
    url = f"{stack.gateway}/payments/v1/webhook_endpoints"
    while True:
        page = httpx.get(url, params={"limit": 100}, headers=headers, timeout=10)
        assert page.status_code == 200, page.text
        endpoints = page.json()["data"]
        if not endpoints:
            return
        for endpoint in endpoints:
            deleted = httpx.delete(f"{url}/{endpoint['id']}", headers=headers, timeout=10)
            assert deleted.status_code in (200, 404), deleted.text
