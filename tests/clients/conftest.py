"""The stack under test: the release binary (STACK_BINARY) on fresh PostgreSQL databases and a
NATS stream of its own, with Swagger UI's assets served from the npm registry's package the way
an air-gapped deployment would serve them (DOCS_ASSETS_URL). One stack for the session; every
test makes its own users and payments."""

import asyncio
import functools
import http.server
import os
import pathlib
import signal
import socket
import subprocess
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
