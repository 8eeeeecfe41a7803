"""Webhooks as a receiver written with the Standard Webhooks reference library sees them:
every delivery verified by `standardwebhooks`, every state change of a burst of payments
arriving exactly once per event id after de-duplication while the receiver first answers 500
and then is down altogether, a rotated secret signing beside the old one, and an endpoint
that only gets the types it asked for."""

import http.server
import json
import threading
import time
import uuid

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from conftest import free_port


class Receiver:
    """A webhook receiver on a port of its own: verifies each delivery with every secret it
    trusts, keeps what it got, answers as told ("ok", "fail"), and can go down and come back
    on the same port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.secrets = []
        self.received = []  # (webhook-id, type, [indexes of the secrets that verified it], signatures)
        self.mode = "ok"
        self.accepted = set()  # webhook-ids answered with a 2xx
        self.lock = threading.Lock()
        self.server = None
        self.start()

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = []
                for index, secret in enumerate(receiver.secrets):
                    try:
                        Webhook(secret).verify(body, headers)
                        verified.append(index)
                    except Exception:  # noqa: BLE001 - the library's verification error
                        pass
                event = json.loads(body)
                failing = receiver.mode == "fail"
                with receiver.lock:
                    receiver.received.append((headers["webhook-id"], event["type"], verified,
                                              len(headers["webhook-signature"].split(" "))))
                    if not failing:
                        receiver.accepted.add(headers["webhook-id"])
                self.send_response(500 if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def got(self):
        with self.lock:
            return list(self.received)

    def wait_for(self, what, done, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done(self.got()):
                return
            time.sleep(0.1)
        raise AssertionError(f"the receiver never saw {what}: {self.got()}")


@pytest.fixture
def admin(stack):
    return {"Authorization": f"Bearer {stack.admin_token()}"}


def register(stack, admin, receiver, events):
    response = httpx.post(f"{stack.gateway}/payments/v1/webhook_endpoints", headers=admin,
                          json={"url": receiver.url, "enabled_events": events}, timeout=10)
    assert response.status_code == 201, response.text
    endpoint = response.json()
    receiver.secrets.append(endpoint["secret"])
    return endpoint


def create_payments(stack, token, count):
    ids = []
    methods = ["pm_card_visa", "pm_card_declined", "pm_card_flaky"]
    for n in range(count):
        response = httpx.post(
            f"{stack.gateway}/payments/v1/payments",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            json={"amount": "12.50", "currency": "EUR", "payment_method": methods[n % 3]},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def events_of(stack, token, payments):
    """Every event of these payments, from the feed, once they are all final."""
    deadline = time.monotonic() + 60
    while True:
        events, after = [], None
        while True:
            params = {"limit": 500, **({"after": after} if after else {})}
            page = httpx.get(f"{stack.gateway}/payments/v1/events", params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            events += [e for e in page["data"] if e["data"].get("payment_id", e["subject"]) in payments]
            after = page["next"]
            if not page["has_more"]:
                break
        final = {e["subject"] for e in events
                 if e["type"] in ("payments.payment.succeeded", "payments.payment.failed")}
        if final >= set(payments):
            return events
        assert time.monotonic() < deadline, f"not every payment finished: {final}"
        time.sleep(0.2)


def test_every_state_change_arrives_once_through_failures_and_an_outage(stack, admin):
    receiver = Receiver()
    receiver.mode = "fail"
    endpoint = register(stack, admin, receiver, ["*"])
    token = stack.new_user_token()
    payments = create_payments(stack, token, 9)
    # Answering 500 for a while ...
    receiver.wait_for("five failed deliveries", lambda got: len(got) >= 5)
    # ... then down altogether for a while ...
    receiver.stop()
    time.sleep(2)
    # ... then back.
    receiver.mode = "ok"
    receiver.start()
    events = events_of(stack, token, payments)
    expected = {e["id"] for e in events}
    # Every event accepted (a 2xx), not merely seen: the first attempts were answered 500.
    receiver.wait_for("every event accepted", lambda got: expected <= receiver.accepted)
    got = receiver.got()
    ours = [g for g in got if g[0] in expected]
    assert all(g[2] == [0] for g in ours), "every delivery verified with the endpoint's secret"
    assert {g[0] for g in ours} == expected, "exactly the events of these payments, once each after de-duplication"
    by_id = {g[0]: g[1] for g in ours}
    assert all(by_id[e["id"]] == e["type"] for e in events)
    # The delivery log says what happened; the dispatcher records an attempt after the
    # receiver has answered it, so the last few may need a moment.
    deadline = time.monotonic() + 30
    while True:
        log = httpx.get(f"{stack.gateway}/payments/v1/webhook_endpoints/{endpoint['id']}/deliveries",
                        params={"limit": 100}, headers=admin, timeout=10).json()["data"]
        ours = [d for d in log if d["event_id"] in expected]
        if all(d["status"] == "delivered" for d in ours) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert any(a["status_code"] == 500 for d in log for a in d["attempts"])
    assert {d["event_id"] for d in ours} == expected
    assert all(d["status"] == "delivered" for d in ours), [(d["event_id"], d["status"]) for d in ours]


def test_a_rotated_secret_signs_beside_the_old_one(stack, admin):
    receiver = Receiver()
    endpoint = register(stack, admin, receiver, ["payments.payment.created"])
    response = httpx.post(
        f"{stack.gateway}/payments/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
        headers=admin, json={"overlap_seconds": 600}, timeout=10)
    assert response.status_code == 200, response.text
    receiver.secrets.append(response.json()["secret"])
    token = stack.new_user_token()
    (payment,) = create_payments(stack, token, 1)
    receiver.wait_for("the created event", lambda got: len(got) >= 1)
    webhook_id, kind, verified, signatures = receiver.got()[0]
    assert kind == "payments.payment.created"
    assert signatures == 2
    assert verified == [0, 1], "the old secret and the new one each verify it on their own"


def test_an_endpoint_gets_only_the_types_it_asked_for(stack, admin):
    receiver = Receiver()
    register(stack, admin, receiver, ["payments.payment.succeeded", "payments.refund.succeeded"])
    token = stack.new_user_token()
    payments = create_payments(stack, token, 6)
    events = events_of(stack, token, payments)
    wanted = {e["id"] for e in events if e["type"] == "payments.payment.succeeded"}
    receiver.wait_for("the succeeded events", lambda got: wanted <= {g[0] for g in got})
    time.sleep(1)
    ours = [g for g in receiver.got() if g[0] in {e["id"] for e in events}]
    assert {g[1] for g in ours} == {"payments.payment.succeeded"}
    assert all(g[2] == [0] for g in ours)
