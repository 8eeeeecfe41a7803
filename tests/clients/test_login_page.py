"""The provider's login (and consent) page in headless Chromium through the gateway: axe-core
(from the npm registry) finds no serious or critical accessibility violation, the page sends a
strict Content-Security-Policy and runs without a violation or a console error, fits a phone,
and says so when the password is wrong. UPDATE_SCREENSHOTS=1 writes docs/images/login-page.png."""

import json
import os
import re
import subprocess
import tarfile

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import (
    authorization_request,
    free_port,
    launch_chromium,
    new_user,
    register_client,
    watch_page,
)

AXE_CORE = "axe-core@4"
SERIOUS = {"serious", "critical"}


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def axe_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("axe-core")
    subprocess.run(["npm", "pack", "--silent", AXE_CORE], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    (archive,) = folder.glob("axe-core-*.tgz")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return (folder / "package" / "axe.min.js").read_text()


@pytest.fixture(scope="module")
def client(stack):
    """A registered first-party client whose redirect URI is never reached here."""
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    registered = register_client(stack, [redirect_uri], auth_method="client_secret_basic",
                                 client_name="Example App")
    return registered["client_id"], redirect_uri


@pytest.fixture
def login_url(discovery, client):
    url, _, _, _ = authorization_request(discovery, *client)
    return url


def csp_directives(header):
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def run_axe(page, axe_source):
    """axe-core's violations of impact serious or critical (all printed)."""
    page.evaluate(axe_source)
    result = page.evaluate("async () => await axe.run(document)")
    violations = result["violations"]
    for violation in violations:
        print(f"axe {violation['impact']}: {violation['id']}: {violation['help']} "
              f"{[node['target'] for node in violation['nodes']]}")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [node["html"] for node in v["nodes"]]}
        for v in violations if v["impact"] in SERIOUS
    ]


def submit_wrong_password(page, email):
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("not-the-password-1")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return answer.value


def test_the_login_page_is_strict_and_clean(stack, browser, login_url):
    context = browser.new_context()
    page = context.new_page()
    problems = watch_page(page)
    response = page.goto(login_url)
    assert response.status == 200, response.status
    headers = response.headers
    assert headers["content-type"].startswith("text/html"), headers
    csp = csp_directives(headers["content-security-policy"])
    assert csp.get("default-src") == ["'none'"], headers["content-security-policy"]
    assert csp.get("frame-ancestors") == ["'none'"], headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer", headers
    assert "no-store" in headers["cache-control"], headers

    form = page.locator("form[method=post i]")
    expect(form).to_have_count(1)
    expect(form.locator("input[name=username]")).to_have_count(1)
    expect(form.locator("input[name=password]")).to_have_count(1)
    assert form.locator("input[type=hidden]").count() >= 1  # the CSRF token
    expect(page.get_by_label("Email")).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(1)
    assert problems == [], problems

    user = new_user(stack)
    answer = submit_wrong_password(page, user["email"])
    assert answer.status == 400, answer.status
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    assert re.search(r"email|password", alert.inner_text(), re.I), alert.inner_text()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(1)
    assert "default-src 'none'" in answer.headers["content-security-policy"], answer.headers
    # A document answered 400 is logged by Chromium as a failed load; nothing else may be.
    problems = [p for p in problems if "status of 400" not in p]
    assert problems == [], problems
    context.close()


def test_axe_finds_no_serious_violations(stack, browser, login_url, axe_source):
    # The page's CSP forbids scripts (axe included): bypassed for this context only.
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.goto(login_url)
    serious = run_axe(page, axe_source)
    assert serious == [], json.dumps(serious, indent=2)

    submit_wrong_password(page, new_user(stack)["email"])
    expect(page.get_by_role("alert")).to_be_visible()
    serious = run_axe(page, axe_source)
    assert serious == [], json.dumps(serious, indent=2)
    context.close()


def test_the_consent_page_has_no_serious_violations(stack, discovery, browser, axe_source):
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    third_party = register_client(stack, [redirect_uri], first_party=False)
    user = new_user(stack)
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    url, _, _, _ = authorization_request(discovery, third_party["client_id"], redirect_uri)
    page.goto(url)
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password", exact=True).fill(user["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    expect(page.get_by_role("button", name="Deny")).to_be_visible()
    serious = run_axe(page, axe_source)
    assert serious == [], json.dumps(serious, indent=2)
    context.close()


def test_the_login_page_fits_a_phone(browser, login_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(login_url)
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"horizontal scroll: scrollWidth {widths[0]} > {widths[1]}"
    for control in (page.get_by_label("Email"), page.get_by_label("Password", exact=True),
                    page.get_by_role("button", name="Sign in")):
        box = control.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    context.close()


def test_a_screenshot_of_the_login_page(browser, login_url, repo_root, tmp_path):
    context = browser.new_context(viewport={"width": 960, "height": 720})
    page = context.new_page()
    page.goto(login_url)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        path = repo_root / "docs" / "images" / "login-page.png"
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = tmp_path / "login-page.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 1000
    context.close()
