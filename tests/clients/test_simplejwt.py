"""A Django monolith's users moved to accounts, and the monolith's API still knowing them: a stock
Django REST framework project with djangorestframework-simplejwt (tests/clients/django_api),
configured through settings alone, accepts the access tokens accounts issues and maps them to
its own users by the `legacy_user_id` claim — the Django primary key the import kept.

The users are real Django users (hashes by Django's own make_password, loaded with `loaddata`);
what is imported is exactly what `manage.py dumpdata auth.user` writes. Primary keys are random
per run: the stack is the whole suite's, and legacy_user_id is unique there."""

import base64
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

from conftest import django_server, free_port

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
    with django_server(DJANGO_API, port, env, work):
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


@pytest.fixture(scope="module")
def edge_gateway(stack, issuer, monolith, tmp_path_factory):
    """A gateway process of the monolith's own in front of it, checking tokens at the edge:
    `/legacy` requires one (the caller goes on in X-Auth-* headers), `/open` ignores them."""
    work = tmp_path_factory.mktemp("edge")
    routes = work / "routes.toml"
    routes.write_text(
        f'[[routes]]\nprefix = "/legacy"\nupstream = "{monolith.url}"\nauth = "required"\n'
        f'[[routes]]\nprefix = "/open"\nupstream = "{monolith.url}"\n')
    port = free_port()
    env = dict(
        os.environ,
        GATEWAY_ADDR=f"127.0.0.1:{port}",
        GATEWAY_ROUTES_FILE=str(routes),
        GATEWAY_ACCOUNTS_URL=stack.accounts,
        GATEWAY_PAYMENTS_URL=stack.payments,
        GATEWAY_JWKS_URL=f"{stack.accounts}/.well-known/jwks.json",
        ACCOUNTS_ISSUER=issuer,
        RUST_LOG="warn",
    )
    log = work / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([os.environ["STACK_BINARY"], "service", "gateway"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_behind_the_gateway_the_monolith_knows_the_caller_from_its_headers(
        stack, monolith, imported, edge_gateway):
    """The README's Django middleware (monolith/gateway_identity.py) in a plain Django view:
    the user the gateway verified is request.user; a client's own X-Auth-* headers count for
    nothing."""
    user = monolith.users[0]
    token = stack.token(user["email"], user["password"])
    response = httpx.get(f"{edge_gateway}/legacy/gateway-whoami/", headers=bearer(token),
                         timeout=30)
    assert response.status_code == 200, (response.status_code, response.text)
    seen = response.json()
    assert seen["authenticated"] is True, seen
    assert (seen["id"], seen["username"]) == (user["pk"], user["username"]), seen

    # No token: the gateway refuses, whatever the client claims in the identity headers.
    spoofed = {"X-Auth-Legacy-User-Id": str(user["pk"]), "X-Auth-Subject": "someone",
               "X-Auth-Scopes": "payments:admin"}
    response = httpx.get(f"{edge_gateway}/legacy/gateway-whoami/", headers=spoofed, timeout=30)
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized", response.json()
    assert response.headers["www-authenticate"].startswith("Bearer"), response.headers

    # A route that does not check tokens: the headers are removed on the way, nobody is
    # signed in.
    response = httpx.get(f"{edge_gateway}/open/gateway-whoami/", headers=spoofed, timeout=30)
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.json() == {"authenticated": False, "id": None, "username": "",
                               "scopes": []}, response.json()

    # Another user's token is that user, not the first.
    other = monolith.users[1]
    token = stack.token(other["email"], other["password"])
    response = httpx.get(f"{edge_gateway}/legacy/gateway-whoami/",
                         headers={**bearer(token), **spoofed}, timeout=30)
    assert response.json()["id"] == other["pk"], response.json()


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


# --- the way back: the export loads into Django -------------------------------------------------

# Every hasher whose hashes accounts imports, by Django's algorithm name.
DJANGO_HASHERS = ["pbkdf2_sha256", "pbkdf2_sha1", "argon2", "bcrypt_sha256", "bcrypt"]
# Our Argon2id, as the export writes it for a password accounts rehashed.
OUR_ARGON2ID = "argon2$argon2id$v=19$m=19456,t=2,p=1$"


def django_script(env, code, payload):
    """Runs `code` in the monolith's `manage.py shell` with `payload` as the JSON variable
    `payload`; the code prints one JSON line last, which is returned, parsed."""
    out = manage(
        {**env, "MONOLITH_PAYLOAD": json.dumps(payload)},
        "shell", "--verbosity", "0", "-c",
        "import json, os\npayload = json.loads(os.environ['MONOLITH_PAYLOAD'])\n" + code,
    )
    return json.loads(out.strip().splitlines()[-1])


def monolith_env(work, name):
    """The monolith's environment on a SQLite file of its own (`name` in `work`), migrated."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="monolith.settings",
               MONOLITH_DATABASE=str(work / f"{name}.sqlite3"))
    manage(env, "migrate", "--verbosity", "0")
    return env


def random_pk_base():
    """A random primary key range of the test's own (legacy_user_id is unique in the stack)."""
    return 100_000 + secrets.randbelow(2_000_000_000 - 200_000)


def import_dump(stack, dump):
    response = httpx.post(
        f"{stack.gateway}/accounts/v1/admin/users/import",
        content=dump,
        headers={**bearer(stack.admin_token()), "Content-Type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def export(stack, emails):
    """GET /accounts/v1/admin/users/export: the entries of the users with these emails, by
    email (the stack is shared: everyone else's users are in it too)."""
    response = httpx.get(f"{stack.gateway}/accounts/v1/admin/users/export",
                         headers=bearer(stack.admin_token()), timeout=120)
    assert response.status_code == 200, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    entries = response.json()
    assert isinstance(entries, list), entries
    assert all(entry["model"] == "auth.user" for entry in entries), entries
    ours = {}
    for entry in entries:
        email = entry["fields"]["email"]
        if email in emails:
            assert email not in ours, (email, ours[email], entry)
            ours[email] = entry
    return ours


MAKE_USERS = """
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.utils.dateparse import parse_datetime

for group in payload["groups"]:
    Group.objects.create(pk=group["pk"], name=group["name"])
for user in payload["users"]:
    created = User(pk=user["pk"], username=user["username"], email=user["email"],
                   first_name=user["first_name"], last_name=user["last_name"],
                   is_staff=user["is_staff"], is_active=user["is_active"],
                   date_joined=parse_datetime(user["date_joined"]),
                   password=make_password(user["password"], hasher=user["hasher"]))
    created.save()
    created.groups.set(user["groups"])
print(json.dumps(len(payload["users"])))
"""

CHECK_USERS = """
from django.contrib.auth import authenticate
from django.contrib.auth.models import User

seen = {}
for user in payload:
    found = User.objects.get(username=user["username"])
    seen[user["username"]] = {
        "pk": found.pk,
        "email": found.email,
        "first_name": found.first_name,
        "last_name": found.last_name,
        "is_active": found.is_active,
        "is_staff": found.is_staff,
        "is_superuser": found.is_superuser,
        "groups": sorted(found.groups.values_list("pk", flat=True)),
        "date_joined": found.date_joined.isoformat(),
        "last_login": found.last_login and found.last_login.isoformat(),
        "algorithm": found.password.split("$", 1)[0],
        "wrong_password": found.check_password(user["password"] + "-wrong"),
        "password": found.check_password(user["password"]),
        # The ModelBackend, as a login form would call it (it refuses inactive users).
        "authenticated": getattr(authenticate(username=user["username"],
                                              password=user["password"]), "pk", None),
    }
print(json.dumps(seen))
"""


def test_the_export_loads_into_django_and_every_password_verifies(stack, tmp_path):
    source = monolith_env(tmp_path, "source")
    run = uuid.uuid4().hex[:10]
    base = random_pk_base()
    group = {"pk": base + 1000, "name": f"export-{run}"}
    users = []
    for number, hasher in enumerate(DJANGO_HASHERS):
        for logs_in in (True, False):
            username = f"{hasher}_{'in' if logs_in else 'out'}_{run}"
            users.append({
                "pk": base + 10 * number + logs_in,
                "username": username,
                "email": f"export-{username.replace('_', '-')}@monolith.example.com",
                "first_name": hasher.capitalize(),
                "last_name": f"Logged {'in' if logs_in else 'out'}",
                "is_staff": number % 2 == 0,
                # One who never logs in is inactive in the monolith (and stays so).
                "is_active": not (hasher == "pbkdf2_sha1" and not logs_in),
                "date_joined": f"2020-0{number + 1}-0{2 + logs_in}T03:04:05+00:00",
                "groups": [group["pk"]] if hasher in ("pbkdf2_sha256", "bcrypt") else [],
                "password": f"pw-{hasher}-{secrets.token_urlsafe(12)}",
                "hasher": hasher,
                "logs_in": logs_in,
            })
    assert django_script(source, MAKE_USERS, {"groups": [group], "users": users}) == len(users)
    dump_file = tmp_path / "dumpdata.json"
    manage(source, "dumpdata", "auth.user", "--indent", "2", "--output", str(dump_file),
           "--verbosity", "0")
    dump = dump_file.read_bytes()
    dumped = {entry["fields"]["username"]: entry for entry in json.loads(dump)}
    assert sorted(dumped) == sorted(user["username"] for user in users), dumped
    for user in users:
        assert dumped[user["username"]]["fields"]["password"].startswith(f"{user['hasher']}$"), (
            user["hasher"], dumped[user["username"]])

    report = import_dump(stack, dump)
    assert report == {"imported": len(users), "updated": 0, "unchanged": 0, "skipped": 0,
                      "refused": [], "conflicts": []}, report

    # Half of them log in at accounts (their Django hash is replaced by our Argon2id).
    for user in users:
        if user["logs_in"]:
            stack.token(user["email"], user["password"])

    # One who never was Django's: signed up at accounts.
    own = {"email": f"export-own-{run}@example.com",
           "password": f"pw-own-{secrets.token_urlsafe(12)}"}
    response = httpx.post(f"{stack.gateway}/accounts/v1/users", json=own, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    stack.token(own["email"], own["password"])

    exported = export(stack, {user["email"] for user in users} | {own["email"]})
    assert sorted(exported) == sorted([user["email"] for user in users] + [own["email"]]), (
        exported)
    for user in users:
        entry = exported[user["email"]]
        assert entry["pk"] == user["pk"], (user, entry)
        fields = entry["fields"]
        assert fields["username"] == user["username"], (user, entry)
        assert (fields["first_name"], fields["last_name"]) == (user["first_name"],
                                                               user["last_name"]), entry
        assert fields["is_staff"] == user["is_staff"], (user, entry)
        assert fields["is_active"] == user["is_active"], (user, entry)
        assert fields["is_superuser"] is False, entry
        assert fields["groups"] == user["groups"], (user, entry)
        if user["logs_in"]:
            assert fields["password"].startswith(OUR_ARGON2ID), (user, entry)
        else:
            # Exactly as Django wrote it.
            assert fields["password"] == dumped[user["username"]]["fields"]["password"], (
                user, entry)
    own_entry = exported[own["email"]]
    assert own_entry["pk"] is None, own_entry
    assert own_entry["fields"]["username"] == own["email"], own_entry
    assert own_entry["fields"]["password"].startswith(OUR_ARGON2ID), own_entry
    assert own_entry["fields"]["is_active"] is True, own_entry
    assert own_entry["fields"]["is_staff"] is False, own_entry
    assert own_entry["fields"]["is_superuser"] is False, own_entry

    # Into a fresh Django database, with `loaddata` (the group the users are in first: the
    # export names groups by primary key, as dumpdata does).
    fresh = monolith_env(tmp_path, "fresh")
    manage(fresh, "shell", "--verbosity", "0", "-c",
           "from django.contrib.auth.models import Group\n"
           f"Group.objects.create(pk={group['pk']}, name={group['name']!r})")
    fixture = tmp_path / "export.json"
    fixture.write_text(json.dumps(list(exported.values()), indent=2))
    manage(fresh, "loaddata", str(fixture), "--verbosity", "0")

    everyone = [*users, {"username": own["email"], "email": own["email"],
                         "password": own["password"]}]
    seen = django_script(fresh, CHECK_USERS,
                         [{"username": u["username"], "password": u["password"]}
                          for u in everyone])
    for user in users:
        found = seen[user["username"]]
        assert found["password"] is True, (user, found)
        assert found["wrong_password"] is False, (user, found)
        assert found["authenticated"] == (user["pk"] if user["is_active"] else None), (
            user, found)
        assert found["pk"] == user["pk"], (user, found)
        assert found["email"] == user["email"], (user, found)
        assert (found["first_name"], found["last_name"]) == (user["first_name"],
                                                             user["last_name"]), found
        assert found["is_active"] == user["is_active"], (user, found)
        assert found["is_staff"] == user["is_staff"], (user, found)
        assert found["is_superuser"] is False, (user, found)
        assert found["groups"] == user["groups"], (user, found)
        assert found["date_joined"] == user["date_joined"], (user, found)
        if user["logs_in"]:
            assert found["last_login"] is not None, (user, found)
        else:
            assert found["last_login"] is None, (user, found)
            assert found["algorithm"] == user["hasher"], (user, found)
    found = seen[own["email"]]
    assert found["password"] is True and found["wrong_password"] is False, found
    assert found["authenticated"] == found["pk"] and found["pk"] is not None, found
    assert found["email"] == own["email"], found
    assert (found["is_active"], found["is_staff"], found["is_superuser"]) == (True, False,
                                                                               False), found
    assert found["groups"] == [], found


# Django's default PBKDF2 iterations, by release.
DJANGO_PBKDF2_ITERATIONS = {"4.2": 600_000, "5.0": 720_000, "5.1": 870_000, "5.2": 1_000_000,
                            "6.0": 1_200_000}

PBKDF2_HASHES = """
from django.contrib.auth.hashers import MD5PasswordHasher, PBKDF2PasswordHasher

hasher = PBKDF2PasswordHasher()
pbkdf2 = [hasher.encode(payload["password"], hasher.salt(), iterations=n)
          for n in payload["iterations"]]
md5 = MD5PasswordHasher()
print(json.dumps({"pbkdf2": pbkdf2, "md5": md5.encode(payload["password"], md5.salt())}))
"""


def test_pbkdf2_hashes_at_each_djangos_default_iterations_verify_and_are_rehashed(
        stack, tmp_path):
    import hashlib

    env = monolith_env(tmp_path, "hashes")
    run = uuid.uuid4().hex[:10]
    base = random_pk_base()
    password = f"pw-{secrets.token_urlsafe(12)}"
    made = django_script(env, PBKDF2_HASHES, {
        "password": password, "iterations": list(DJANGO_PBKDF2_ITERATIONS.values())})
    pbkdf2 = dict(zip(DJANGO_PBKDF2_ITERATIONS, made["pbkdf2"], strict=True))
    for release, iterations in DJANGO_PBKDF2_ITERATIONS.items():
        assert pbkdf2[release].startswith(f"pbkdf2_sha256${iterations}$"), pbkdf2

    # Hashers Django had and removed (5.1: sha1, unsalted_md5, unsalted_sha1; 5.0: crypt), in
    # the form they stored: literal strings, the way those hashers wrote them.
    salt = secrets.token_hex(6)
    weak = [
        ("md5", made["md5"], "md5"),
        ("sha1", f"sha1${salt}${hashlib.sha1((salt + password).encode()).hexdigest()}", "sha1"),
        # Unsalted MD5 was stored either bare (32 hex digits, no algorithm at all) or as md5$$;
        # the reason names the hasher that made it all the same.
        ("unsalted_md5", hashlib.md5(password.encode()).hexdigest(), "unsalted_md5"),
        ("unsalted_md5_prefixed", f"md5$${hashlib.md5(password.encode()).hexdigest()}",
         "unsalted_md5"),
        ("unsalted_sha1", f"sha1$${hashlib.sha1(password.encode()).hexdigest()}",
         "unsalted_sha1"),
        ("crypt", "crypt$$abJnggxhB/yWI", "crypt"),
    ]
    assert weak[0][1].startswith("md5$") and len(weak[0][1].split("$")) == 3, weak[0]

    def entry(pk, username, password_hash):
        return {"model": "auth.user", "pk": pk, "fields": {
            "password": password_hash, "last_login": None, "is_superuser": False,
            "username": username, "first_name": "", "last_name": "",
            "email": f"{username.replace('_', '-')}@monolith.example.com", "is_staff": False,
            "is_active": True, "date_joined": "2024-01-02T03:04:05Z", "groups": [],
            "user_permissions": []}}

    entries = [entry(base + number, f"django{release.replace('.', '')}_{run}", pbkdf2[release])
               for number, release in enumerate(DJANGO_PBKDF2_ITERATIONS)]
    for number, (name, password_hash, _) in enumerate(weak):
        entries.append(entry(base + 100 + number, f"{name}_{run}", password_hash))
    emails = {e["fields"]["email"] for e in entries}

    report = import_dump(stack, json.dumps(entries).encode())
    first_weak = len(DJANGO_PBKDF2_ITERATIONS)
    assert report["imported"] == len(DJANGO_PBKDF2_ITERATIONS), report
    assert (report["updated"], report["unchanged"], report["skipped"], report["conflicts"]) == (
        0, 0, 0, []), report
    assert [r["index"] for r in report["refused"]] == list(
        range(first_weak, first_weak + len(weak))), report
    for refused, (name, password_hash, algorithm), sent in zip(report["refused"], weak,
                                                               entries[first_weak:], strict=True):
        assert refused["pk"] == sent["pk"], (name, refused)
        assert refused["username"] == sent["fields"]["username"], (name, refused)
        assert "unsupported password hasher" in refused["reason"], (name, refused)
        assert f'"{algorithm}"' in refused["reason"], (name, refused)
        assert password_hash not in refused["reason"], (name, refused)  # never the hash

    before = export(stack, emails)
    assert sorted(before) == sorted(e["fields"]["email"] for e in entries[:first_weak]), before
    for sent in entries[:first_weak]:
        assert before[sent["fields"]["email"]]["fields"]["password"] == (
            sent["fields"]["password"]), before[sent["fields"]["email"]]

    for sent in entries[:first_weak]:
        email = sent["fields"]["email"]
        stack.token(email, password)  # Django's hash, verified and replaced
        stack.token(email, password)  # ours from now on
        wrong = httpx.post(f"{stack.gateway}/accounts/v1/token",
                           data={"grant_type": "password", "username": email,
                                 "password": password + "-wrong"}, timeout=10)
        assert wrong.status_code in (400, 401), (wrong.status_code, wrong.text)

    after = export(stack, emails)
    assert sorted(after) == sorted(before), after
    for sent in entries[:first_weak]:
        exported = after[sent["fields"]["email"]]
        assert exported["pk"] == sent["pk"], exported
        assert exported["fields"]["password"].startswith(OUR_ARGON2ID), exported
