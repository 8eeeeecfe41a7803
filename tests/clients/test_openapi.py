"""The OpenAPI documents: valid (openapi-spec-validator), pointing at wherever they were fetched
from, and good enough that a client generated from one by a stock generator
(openapi-python-client) works through the gateway."""

import importlib
import subprocess
import sys
import uuid

import httpx
import pytest
from openapi_spec_validator import validate

SERVICES = ["accounts", "payments"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_is_valid_and_names_the_gateway(stack, service):
    through_gateway = httpx.get(f"{stack.gateway}/{service}/openapi.json", timeout=10)
    assert through_gateway.status_code == 200
    document = through_gateway.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": f"{stack.gateway}/{service}"}]

    direct_base = getattr(stack, service)
    direct = httpx.get(f"{direct_base}/openapi.json", timeout=10).json()
    assert direct["servers"] == [{"url": direct_base}]
    assert direct["paths"] == document["paths"]


def test_a_generated_client_creates_and_reads_a_payment_through_the_gateway(stack, tmp_path):
    spec = tmp_path / "payments.json"
    spec.write_bytes(httpx.get(f"{stack.gateway}/payments/openapi.json", timeout=10).content)
    subprocess.run(
        ["openapi-python-client", "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(tmp_path / "payments_client")],
        check=True,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("payments_client.client")
        create_payment = importlib.import_module("payments_client.api.payments.create_payment")
        get_payment = importlib.import_module("payments_client.api.payments.get_payment")
        list_payments = importlib.import_module("payments_client.api.payments.list_payments")
        models = importlib.import_module("payments_client.models")

        document = spec.read_text()
        base_url = httpx.Response(200, content=document).json()["servers"][0]["url"]
        client = client_module.AuthenticatedClient(base_url=base_url, token=stack.new_user_token())
        body = models.CreatePayment.from_dict(
            {"amount": "12.34", "currency": "EUR", "description": "generated client"}
        )
        key = f"generated-{uuid.uuid4()}"
        created = create_payment.sync_detailed(client=client, body=body, idempotency_key=key)
        assert created.status_code == 202, created.content
        payment = created.parsed
        assert isinstance(payment, models.Payment), payment
        assert payment.amount == "12.34" and payment.amount_minor == 1234
        assert payment.currency == "EUR"
        assert created.headers["location"] == f"/payments/v1/payments/{payment.id}"

        again = create_payment.sync_detailed(client=client, body=body, idempotency_key=key)
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.parsed.id == payment.id

        read = get_payment.sync(id=payment.id, client=client)
        assert isinstance(read, models.Payment), read
        assert read.id == payment.id
        assert read.status.value in {"pending", "processing", "succeeded"}

        page = list_payments.sync(client=client, limit=10)
        assert [p.id for p in page.data] == [payment.id]
        assert page.has_more is False

        missing = get_payment.sync_detailed(id="pay_missing", client=client)
        assert missing.status_code == 404
        assert missing.parsed.code.value == "not_found"
    finally:
        sys.path.remove(str(tmp_path))
