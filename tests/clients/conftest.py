"""The stack under test: the release binary (STACK_BINARY) on fresh PostgreSQL databases and a
NATS stream of its own, with Swagger UI's assets served from the npm registry's package the way
an air-gapped deployment would serve them (DOCS_ASSETS_URL). One stack for the session; every
test makes its own users and payments."""

import asyncio
import contextlib
import functools
import http.server
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import uuid

import httpx
import pytest

POSTGRES = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
NATS = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")
SWAGGER_UI = "swagger-ui-dist@5.35.0"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(name):
    parts = urllib.parse.urlsplit(POSTGRES)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def psql(sql):
    subprocess.run(["psql", POSTGRES, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True)


class Stack:
    """Where the stack answers, and tokens for its users."""

    def __init__(self, gateway, accounts, payments, assets, log):
        self.gateway = gateway
        self.accounts = accounts
        self.payments = payments
        self.assets = assets
        self.log = log

    def token(self, email, password, scope=None):
        form = {"grant_type": "password", "username": email, "password": password}
        if scope:
            form["scope"] = scope
        response = httpx.post(f"{self.gateway}/accounts/v1/token", data=form, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def admin_token(self):
        return self.token(ADMIN_EMAIL, ADMIN_PASSWORD)

    def new_user_token(self):
        email = f"client-{uuid.uuid4().hex[:12]}@example.com"
        response = httpx.post(
            f"{self.gateway}/accounts/v1/users",
            json={"email": email, "password": PASSWORD},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return self.token(email, PASSWORD)


@pytest.fixture(scope="session")
def swagger_assets(tmp_path_factory):
    """swagger-ui-dist from the npm registry, served on a port of its own."""
    folder = tmp_path_factory.mktemp("swagger-ui")
    subprocess.run(["npm", "pack", "--silent", SWAGGER_UI], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    (archive,) = folder.glob("swagger-ui-dist-*.tgz")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    handler = functools.partial(QuietHandler, directory=str(folder / "package"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, format, *args):
        QuietHandler.requests.append(self.path)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, swagger_assets, request):
    run = uuid.uuid4().hex[:8]
    databases = [f"clients_accounts_{run}", f"clients_payments_{run}"]
    for name in databases:
        psql(f'CREATE DATABASE "{name}"')
    stream = f"CLIENTS_{run.upper()}"
    work = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("gateway", "accounts", "payments")}
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    env = dict(
        os.environ,
        GATEWAY_ADDR=f"127.0.0.1:{ports['gateway']}",
        ACCOUNTS_ADDR=f"127.0.0.1:{ports['accounts']}",
        PAYMENTS_ADDR=f"127.0.0.1:{ports['payments']}",
        ACCOUNTS_ISSUER=f"{gateway}/accounts",
        DATA_DIR=str(work / "data"),
        ACCOUNTS_DATABASE_URL=database_url(databases[0]),
        PAYMENTS_DATABASE_URL=database_url(databases[1]),
        NATS_URL=NATS,
        PAYMENTS_STREAM=stream,
        PAYMENTS_SUBJECT_PREFIX=f"clients{run}.payment",
        ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
        ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # The fuzzers send thousands of requests from one address; limits are tested elsewhere.
        GATEWAY_RATE_LIMIT_RPS="0",
        DOCS_ASSETS_URL=swagger_assets,
        # test_webhooks.py's receivers listen on 127.0.0.1 over http, and come back quickly.
        PAYMENTS_WEBHOOK_ALLOW_PRIVATE="true",
        PAYMENTS_WEBHOOK_ALLOW_HTTP="true",
        PAYMENTS_WEBHOOK_RETRY_SCHEDULE=",".join(["200ms", "400ms", "800ms"] + ["1s"] * 30),
        PAYMENTS_WEBHOOK_TIMEOUT_MS="3000",
        RUST_LOG="info",
    )
    log = work / "stack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([os.environ["STACK_BINARY"]], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{gateway}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Stack(
            gateway,
            f"http://127.0.0.1:{ports['accounts']}",
            f"http://127.0.0.1:{ports['payments']}",
            swagger_assets,
            log,
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        if request.session.testsfailed:
            print(f"\n--- the stack's log (last lines of {log}) ---\n{log.read_text()[-6000:]}")
        for name in databases:
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        asyncio.run(delete_stream(stream))


async def delete_stream(stream):
    import nats

    connection = await nats.connect(NATS)
    try:
        await connection.jetstream().delete_stream(stream)
    except Exception:  # noqa: BLE001 - never created when nothing was published
        pass
    await connection.close()


@pytest.fixture(scope="session")
def repo_root():
    return pathlib.Path(__file__).resolve().parents[2]


# --- OpenID Connect (test_oidc.py, test_login_page.py) ----------------------------------------

# Debian's chromium; CHROMIUM=playwright uses the browser `playwright install` downloaded.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OIDC_SCOPE = "openid profile email"


def launch_chromium(playwright):
    """Headless Chromium for a module's `browser` fixture (each module opens its own
    sync_playwright: two at once cannot run in one thread)."""
    executable = None if CHROMIUM == "playwright" else CHROMIUM
    return playwright.chromium.launch(executable_path=executable, headless=True,
                                      args=["--no-sandbox"])


def watch_page(page):
    """Console errors, uncaught page errors and Content-Security-Policy violations of a page,
    as a list that fills while the page lives."""
    problems = []

    def console(message):
        # Chromium asks every origin for /favicon.ico: not the page's doing.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )
    return problems


@pytest.fixture(scope="session")
def issuer(stack):
    return f"{stack.gateway}/accounts"


@pytest.fixture(scope="session")
def discovery(issuer):
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def new_user(stack):
    """A user of the test's own: {"email", "password", "name"}."""
    suffix = uuid.uuid4().hex[:12]
    user = {"email": f"oidc-{suffix}@example.com", "password": f"pw-{suffix}",
            "name": f"Ada {suffix}"}
    response = httpx.post(f"{stack.gateway}/accounts/v1/users", json=user, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)
    return user


def register_client(stack, redirect_uris, post_logout_redirect_uris=(),
                    auth_method="client_secret_basic", first_party=True, scope=OIDC_SCOPE,
                    grant_types=("authorization_code", "refresh_token"), client_name=None):
    """An OAuth client registered by the admin (RFC 7591 metadata); the 201 answer's JSON."""
    metadata = {
        "client_name": client_name or f"test client {uuid.uuid4().hex[:8]}",
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "grant_types": list(grant_types),
        "token_endpoint_auth_method": auth_method,
        "scope": scope,
        "first_party": first_party,
    }
    response = httpx.post(
        f"{stack.gateway}/accounts/v1/admin/clients",
        json=metadata,
        headers={"Authorization": f"Bearer {stack.admin_token()}"},
        timeout=10,
    )
    assert response.status_code == 201, (response.status_code, response.text)
    registered = response.json()
    assert registered["client_id"], registered
    assert registered["redirect_uris"] == metadata["redirect_uris"], registered
    assert registered["token_endpoint_auth_method"] == auth_method, registered
    if auth_method == "none":
        assert not registered.get("client_secret"), registered
    else:
        assert registered["client_secret"], registered
    return registered


def authorization_request(discovery, client_id, redirect_uri, scope=OIDC_SCOPE, **extra):
    """An authorization code request with PKCE (S256), state and nonce, built by hand the way
    any client would: (url, state, nonce, code_verifier)."""
    import base64
    import hashlib
    import secrets

    state = secrets.token_urlsafe(16)
    nonce = secrets.token_urlsafe(16)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        **extra,
    }
    url = f"{discovery['authorization_endpoint']}?{urllib.parse.urlencode(query)}"
    return url, state, nonce, verifier


class RedirectTarget:
    """A client's redirect URI on a port of its own: answers every GET with a small page and
    remembers the paths it was asked for."""

    def __init__(self):
        self.requests = []
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                target.requests.append(self.path)
                body = b'<!doctype html><html lang="en"><title>client</title><p>client</p></html>'
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirect_target():
    target = RedirectTarget()
    yield target
    target.close()


@contextlib.contextmanager
def django_server(project, port, env, work):
    """A Django project (its folder) served by `manage.py runserver` on `port` until the block
    ends; its log is printed (pytest shows it when a test fails)."""
    log = work / "django.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
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
