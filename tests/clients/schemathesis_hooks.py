"""schemathesis hooks for tests/clients/test_fuzz.py: operations that take an access token get
a fresh one of the bootstrap admin (every scope), fetched again whenever the service answers 401
(the fuzzer itself may rotate the signing key in an emergency, which ends every token)."""

import os

import httpx
import schemathesis

GATEWAY = os.environ["FUZZ_GATEWAY"]


@schemathesis.auth(refresh_interval=60).skip_for(path_regex=r"^/v1/token")
class AdminToken:
    def get(self, case, context):
        response = httpx.post(
            f"{GATEWAY}/accounts/v1/token",
            data={
                "grant_type": "password",
                "username": os.environ["FUZZ_ADMIN_EMAIL"],
                "password": os.environ["FUZZ_ADMIN_PASSWORD"],
            },
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
