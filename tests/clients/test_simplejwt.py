"""A Django monolith's users moved to accounts, and the monolith's API still knowing them: a stock
Django REST framework project with djangorestframework-simplejwt (tests/clients/django_api),
configured through settings alone, accepts the access tokens accounts issues and maps them to
its own users by the `legacy_user_id` claim — the Django primary key the import kept.

The users are real Django users (hashes by Django's own make_password, loaded with `loaddata`);
what is imported is exactly what `manage.py dumpdata auth.user` writes. Primary keys are random
per run: the stack is the whole suite's, and legacy_user_id is unique there."""

import base64
import contextlib
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port

DJANGO_API = pathlib.Path(__file__).parent / "django_api"


# --- helpers ------------------------------------------------------------------------------------


def manage(env, *args):
    """`manage.py <args>` of the monolith; its stdout. A failure says what Django said."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=DJANGO_API, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def django_hashes(env, passwords):
    """Django's own hashes (its default hasher, make_password) of the passwords, in order."""
    out = manage(
        {**env, "MONOLITH_PASSWORDS": json.dumps(passwords)},
        "shell", "--verbosity", "0", "-c",
        "import json, os\n"
        "from django.contrib.auth.hashers import make_password\n"
        "print(json.dumps([make_password(p) for p in json.loads(os.environ['MONOLITH_PASSWORDS'])]))",
    )
    hashes = json.loads(out.strip().splitlines()[-1])
    assert len(hashes) == len(passwords)
    assert all(h.startswith("pbkdf2_sha256$") for h in hashes), hashes
    return hashes


@contextlib.contextmanager
def django_server(port, env, work):
    """The monolith served by `manage.py runserver` on `port`; its log is printed (pytest shows
    it when a test fails)."""
    log = work / "django.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=DJANGO_API, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Django did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"--- Django's log ---\n{log.read_text()[-6000:]}")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token):
    header, payload, signature = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(payload)), signature


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class Monolith:
    """The running Django project, its users (as loaded) and the dumpdata output."""

    def __init__(self, url, users, dump):
        self.url = url
        self.users = users  # [{"pk", "username", "email", "password"}]
        self.dump = dump  # bytes, exactly as `manage.py dumpdata auth.user` wrote them

    def whoami(self, token):
        return httpx.get(f"{self.url}/whoami/", headers=bearer(token), timeout=30)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monolith(issuer, tmp_path_factory):
    """The monolith with three users of its own (random primary keys, none Django would have
    chosen), migrated, loaded with `loaddata` and dumped with `dumpdata auth.user`; served."""
    work = tmp_path_factory.mktemp("monolith")
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="monolith.settings",
        MONOLITH_DATABASE=str(work / "monolith.sqlite3"),
        MONOLITH_ISSUER=issuer,
        MONOLITH_AUDIENCE="payments",
    )
    manage(env, "migrate", "--verbosity", "0")

    run = uuid.uuid4().hex[:10]
    base = 100_000 + secrets.randbelow(2_000_000_000 - 200_000)
    users = [
        {"pk": base + 41, "username": f"ada_{run}", "first_name": "Ada", "last_name": "Lovelace"},
        {"pk": base + 42, "username": f"grace_{run}", "first_name": "Grace",
         "last_name": "Hopper"},
        {"pk": base + 7, "username": f"alan_{run}", "first_name": "Alan", "last_name": "Turing"},
    ]
    for user in users:
        user["email"] = f"{user['username'].replace('_', '-')}@monolith.example.com"
        user["password"] = f"pw-{secrets.token_urlsafe(12)}"
    hashes = django_hashes(env, [user["password"] for user in users])
    fixture = [
        {
            "model": "auth.user",
            "pk": user["pk"],
            "fields": {
                "password": password_hash,
                "last_login": None,
                "is_superuser": False,
                "username": user["username"],
                "first_name": user["first_name"],
                "last_name": user["last_name"],
                "email": user["email"],
                "is_staff": False,
                "is_active": True,
                "date_joined": "2024-01-02T03:04:05Z",
                "groups": [],
                "user_permissions": [],
            },
        }
        for user, password_hash in zip(users, hashes)
    ]
    fixture_file = work / "users.json"
    fixture_file.write_text(json.dumps(fixture, indent=2))
    manage(env, "loaddata", str(fixture_file), "--verbosity", "0")

    dump_file = work / "dumpdata.json"
    manage(env, "dumpdata", "auth.user", "--indent", "2", "--output", str(dump_file),
           "--verbosity", "0")
    dump = dump_file.read_bytes()
    dumped = json.loads(dump)
    assert sorted(entry["pk"] for entry in dumped) == sorted(u["pk"] for u in users), dumped
    for entry in dumped:
        assert entry["model"] == "auth.user", entry
        assert entry["fields"]["password"].startswith("pbkdf2_sha256$"), entry
        assert entry["fields"]["date_joined"] == "2024-01-02T03:04:05Z", entry

    port = free_port()
    with django_server(port, env, work):
        yield Monolith(f"http://127.0.0.1:{port}", users, dump)


@pytest.fixture(scope="module")
def import_response(stack, monolith):
    """The answer to POSTing the dumpdata output, as it was written, to the import endpoint."""
    return httpx.post(
        f"{stack.gateway}/accounts/v1/admin/users/import",
        content=monolith.dump,
        headers={**bearer(stack.admin_token()), "Content-Type": "application/json"},
        timeout=120,  # three PBKDF2 hashes checked
    )


@pytest.fixture(scope="module")
def imported(import_response):
    assert import_response.status_code == 200, (import_response.status_code,
                                                import_response.text)
    return import_response.json()


@pytest.fixture(scope="module")
def jwks_client(issuer):
    return jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json")


def verified_claims(token, issuer, jwks_client):
    """PyJWT's own validation of an accounts access token: RS256 against the JWKS, iss, aud."""
    key = jwks_client.get_signing_key_from_jwt(token).key
    claims = jwt.decode(token, key, algorithms=["RS256"], issuer=issuer, audience="payments",
                        options={"require": ["exp", "iat", "nbf", "jti", "sub", "iss", "aud"]},
                        leeway=5)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header.get("kid"), header
    return claims


# --- tests --------------------------------------------------------------------------------------


def test_imported_users_are_their_django_users_in_django_rest_framework(
        stack, issuer, monolith, import_response, imported, jwks_client):
    assert import_response.headers["content-type"].startswith("application/json"), (
        import_response.headers)
    assert imported == {"imported": len(monolith.users), "updated": 0, "unchanged": 0,
                        "skipped": 0, "refused": [], "conflicts": []}, imported

    for user in monolith.users:
        token = stack.token(user["email"], user["password"])
        claims = verified_claims(token, issuer, jwks_client)
        assert claims["legacy_user_id"] == user["pk"], claims
        assert type(claims["legacy_user_id"]) is int, claims  # a JSON number, not a string
        assert "token_type" not in claims, claims
        assert claims["sub"] != str(user["pk"]), claims  # accounts' own id is not Django's
        assert "accounts" in claims["aud"] and "payments" in claims["aud"], claims

        response = monolith.whoami(token)
        assert response.status_code == 200, (user, response.status_code, response.text)
        assert response.json() == {"id": user["pk"], "username": user["username"],
                                   "email": user["email"]}, (user, response.json())

        me = httpx.get(f"{stack.gateway}/accounts/users/me", headers=bearer(token), timeout=10)
        assert me.status_code == 200, (me.status_code, me.text)
        assert me.json()["legacy_user_id"] == user["pk"], me.json()
        assert me.json()["email"] == user["email"], me.json()

    # The first login replaced the Django hash (Argon2id from now on): the next token still
    # carries the claim, and Django still knows its user.
    user = monolith.users[1]
    again = stack.token(user["email"], user["password"])
    assert verified_claims(again, issuer, jwks_client)["legacy_user_id"] == user["pk"]
    response = monolith.whoami(again)
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.json()["id"] == user["pk"], response.json()
    assert response.json()["username"] == user["username"], response.json()

    # Importing the same dump again adds nobody and changes nobody's legacy_user_id.
    rerun = httpx.post(f"{stack.gateway}/accounts/v1/admin/users/import", content=monolith.dump,
                       headers={**bearer(stack.admin_token()),
                                "Content-Type": "application/json"},
                       timeout=120)
    assert rerun.status_code == 200, (rerun.status_code, rerun.text)
    assert rerun.json() == {"imported": 0, "updated": 0, "unchanged": len(monolith.users),
                            "skipped": 0, "refused": [], "conflicts": []}, (
        rerun.json())
    token = stack.token(user["email"], user["password"])
    assert verified_claims(token, issuer, jwks_client)["legacy_user_id"] == user["pk"]


def test_a_user_who_never_was_djangos_is_refused_by_django(stack, issuer, monolith, jwks_client):
    token = stack.new_user_token()
    claims = verified_claims(token, issuer, jwks_client)  # a good token, for the right audience
    assert "legacy_user_id" not in claims, claims

    me = httpx.get(f"{stack.gateway}/accounts/users/me", headers=bearer(token), timeout=10)
    assert me.status_code == 200, (me.status_code, me.text)
    assert me.json().get("legacy_user_id") is None, me.json()

    response = monolith.whoami(token)
    assert response.status_code == 401, (response.status_code, response.text)
    # Refused for the missing claim (after the signature, iss, aud and exp were accepted), not
    # for a token simplejwt could not validate.
    assert response.json()["code"] == "token_not_valid", response.json()
    assert "no recognizable user identification" in response.json()["detail"], response.json()
    assert response.headers["www-authenticate"].startswith("Bearer"), response.headers


def test_tampered_tokens_are_refused_by_django(stack, monolith, imported):
    victim, attacker = monolith.users[0], monolith.users[2]
    token = stack.token(attacker["email"], attacker["password"])
    untouched = monolith.whoami(token)
    assert untouched.status_code == 200, (untouched.status_code, untouched.text)
    header, payload, signature = segments(token)
    signing_input = token.rsplit(".", 1)[0]

    # Another user's legacy_user_id, the signature left as it was.
    other = b64url(json.dumps({**payload, "legacy_user_id": victim["pk"]}).encode())
    as_victim = f"{b64url(json.dumps(header).encode())}.{other}.{signature}"
    # The same claims with one byte of the signature changed.
    raw = bytearray(unb64url(signature))
    raw[len(raw) // 2] ^= 0x01
    bad_signature = f"{signing_input}.{b64url(bytes(raw))}"
    # Signed by a key of the attacker's own under accounts' kid.
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_key = jwt.encode({**payload, "legacy_user_id": victim["pk"]}, own_key,
                             algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    # No signature at all.
    unsigned = (f"{b64url(json.dumps({**header, 'alg': 'none'}).encode())}."
                f"{other}.")

    for name, tampered in [("claim changed", as_victim), ("signature changed", bad_signature),
                           ("foreign key", foreign_key), ("alg none", unsigned)]:
        response = monolith.whoami(tampered)
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert response.json()["code"] == "token_not_valid", (name, response.json())
        # accounts refuses it too.
        me = httpx.get(f"{stack.gateway}/accounts/users/me", headers=bearer(tampered),
                       timeout=10)
        assert me.status_code == 401, (name, me.status_code, me.text)

    response = monolith.whoami(token)
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.json()["id"] == attacker["pk"], response.json()
