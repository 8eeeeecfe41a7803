"""`/docs` in a real headless Chromium (Debian's, driven by Playwright): Swagger UI loads from
the assets URL under the page's strict Content-Security-Policy, renders the document fetched
through the gateway, and lists every operation."""

import os

import httpx
import pytest
from playwright.sync_api import sync_playwright

# Debian's chromium; CHROMIUM=playwright uses the browser `playwright install` downloaded
# (the GitHub workflow, where Ubuntu's chromium is a snap).
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        executable = None if CHROMIUM == "playwright" else CHROMIUM
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.mark.parametrize("service", ["accounts", "payments"])
def test_the_docs_page_lists_every_operation(stack, browser, service):
    document = httpx.get(f"{stack.gateway}/{service}/openapi.json", timeout=10).json()
    operations = [
        (operation["tags"][0], operation["operationId"])
        for item in document["paths"].values()
        for operation in item.values()
    ]

    page = browser.new_page()
    violations = []
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation',"
        " e => (window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    assets = []
    page.on("request", lambda r: r.url.startswith(stack.assets) and assets.append(r.url))

    response = page.goto(f"{stack.gateway}/{service}/docs")
    assert response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock", timeout=30_000)
    for tag, operation_id in operations:
        assert page.locator(f"#operations-{tag}-{operation_id}").count() == 1, (
            f"{operation_id} is not listed"
        )
    assert page.locator(".opblock").count() == len(operations)
    violations = page.evaluate("window.__violations || []")
    assert violations == [], violations
    assert errors == [], errors
    assert any(url.endswith("/swagger-ui-bundle.js") for url in assets), assets
    page.close()
