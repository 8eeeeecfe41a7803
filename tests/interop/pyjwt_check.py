"""Independent check of accounts' tokens with PyJWT's PyJWKClient, as a third-party service
would do it: discovery document -> JWKS -> verify signature, typ, iss, aud, exp.

Usage: python3 tests/interop/pyjwt_check.py http://127.0.0.1:18080
(the all-in-one stack must be running, with ACCOUNTS_ISSUER set to <base>/accounts)."""

import json
import sys
import urllib.parse
import urllib.request
import uuid

import jwt
from jwt import PyJWKClient


def call(method, url, body=None, content_type=None, token=None):
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def main(base):
    discovery = call("GET", f"{base}/accounts/.well-known/openid-configuration")[1]
    issuer = discovery["issuer"]
    assert issuer == f"{base}/accounts", f"issuer {issuer!r}"

    email = f"pyjwt-{uuid.uuid4().hex[:8]}@example.com"
    status, _ = call("POST", f"{base}/accounts/v1/users",
                     json.dumps({"email": email, "password": "password-123"}).encode(), "application/json")
    assert status == 201, status
    form = urllib.parse.urlencode({"grant_type": "password", "username": email, "password": "password-123"})
    status, tokens = call("POST", discovery["token_endpoint"], form.encode(), "application/x-www-form-urlencoded")
    assert status == 200, status
    token = tokens["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    signing_key = PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256", "EdDSA"],
        audience="payments",
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    assert "payments:write" in claims["scope"].split(), claims

    # A token for another audience must not pass.
    try:
        jwt.decode(token, signing_key.key, algorithms=["RS256", "EdDSA"], audience="billing", issuer=issuer)
    except jwt.InvalidAudienceError:
        pass
    else:
        raise AssertionError("a wrong audience verified")

    status, me = call("GET", f"{base}/accounts/users/me", token=token)
    assert status == 200 and me["email"] == email, me
    print(f"ok PyJWT {jwt.__version__}: {header['alg']} token (kid {header['kid']}) verified via {discovery['jwks_uri']}")


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
