"""The accounts service as an OpenID Connect provider, through the gateway, used by clients no
one here wrote: Authlib (discovery metadata, the authorization code flow with PKCE, ID token
validation, userinfo, refresh), mozilla-django-oidc in a Django project of its own
(tests/clients/django_rp) driven by headless Chromium, and Chromium on the consent page and
RP-initiated logout. Endpoints come from the discovery document, never from this file."""

import contextlib
import html.parser
import http.cookies
import os
import pathlib
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken, IDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from conftest import (
    authorization_request,
    django_server,
    free_port,
    launch_chromium,
    new_user,
    register_client,
    watch_page,
)

DJANGO_RP = pathlib.Path(__file__).parent / "django_rp"
SCOPE = "openid profile email payments:read"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


# --- helpers ------------------------------------------------------------------------------------


class Forms(html.parser.HTMLParser):
    """The forms of a page: method, action and fields (input, button)."""

    def __init__(self, text):
        super().__init__()
        self.forms = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (attrs.get("method") or "get").lower(),
                               "action": attrs.get("action") or "", "fields": []})
        elif tag in ("input", "button") and self.forms:
            self.forms[-1]["fields"].append({"tag": tag, **attrs})


def login_form(page):
    """The one POST form with a username and a password field."""
    forms = [
        form for form in Forms(page.text).forms
        if form["method"] == "post"
        and {"username", "password"} <= {field.get("name") for field in form["fields"]}
    ]
    assert len(forms) == 1, f"no single login form in {page.url}:\n{page.text[:3000]}"
    return forms[0]


class Agent:
    """Plain httpx acting as a browser on the provider's origin: keeps the cookies it is given
    (by hand, as a browser on a loopback origin would, Secure ones included), follows nothing
    on its own."""

    def __init__(self):
        self.http = httpx.Client(timeout=10, follow_redirects=False)
        self.cookies = {}

    def request(self, method, url, **kwargs):
        headers = kwargs.pop("headers", {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, url, headers=headers, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            cookie = http.cookies.SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] in ("0", "-1") or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def authorize(self, url, redirect_uri, user=None):
        """GET the authorization URL and, when the login form comes, sign in with `user`.
        Returns the response that redirects to `redirect_uri` (not fetched)."""
        response = self.request("GET", url)
        for _ in range(6):
            location = response.headers.get("location", "")
            if response.is_redirect and location.startswith(redirect_uri):
                return response
            if response.is_redirect:
                response = self.request("GET", urllib.parse.urljoin(str(response.url), location))
                continue
            assert response.status_code == 200, (response.status_code, response.text[:2000])
            assert user is not None, f"a login form where none was expected:\n{response.text}"
            form = login_form(response)
            fields = {
                field["name"]: field.get("value", "")
                for field in form["fields"]
                if field["tag"] == "input" and field.get("type") == "hidden" and field.get("name")
            }
            fields.update(username=user["email"], password=user["password"])
            response = self.request("POST", urllib.parse.urljoin(str(response.url), form["action"]),
                                    data=fields)
            user = None  # one login; a second form means the login did not take
        raise AssertionError(f"no redirect to {redirect_uri}: {response.status_code} "
                             f"{response.headers} {response.text[:2000]}")


def query_of(url):
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def jwks(discovery):
    response = httpx.get(discovery["jwks_uri"], timeout=10)
    assert response.status_code == 200, response.text
    return JsonWebKey.import_key_set(response.json())


def validate_id_token(id_token, discovery, client_id, nonce=None, access_token=None,
                      claims_cls=CodeIDToken):
    """Authlib's own ID token validation: signature against the JWKS, iss, aud, exp, iat,
    nonce, azp and at_hash."""
    params = {"client_id": client_id}
    if nonce is not None:
        params["nonce"] = nonce
    if access_token is not None:
        params["access_token"] = access_token
    claims = jwt.decode(
        id_token,
        jwks(discovery),
        claims_cls=claims_cls,
        claims_options={
            "iss": {"essential": True, "value": discovery["issuer"]},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        },
        claims_params=params,
    )
    claims.validate(leeway=30)
    assert claims.header["alg"] == "RS256", claims.header
    assert claims.header.get("kid"), claims.header
    return claims


def token_request(discovery, registered, form):
    """POST to the token endpoint with the client's own authentication method."""
    auth = None
    form = dict(form)
    method = registered["token_endpoint_auth_method"]
    if method == "client_secret_basic":
        auth = (registered["client_id"], registered["client_secret"])
    else:
        form["client_id"] = registered["client_id"]
        if method == "client_secret_post":
            form["client_secret"] = registered["client_secret"]
    return httpx.post(discovery["token_endpoint"], data=form, auth=auth, timeout=10)


def arrive(page, where, problems):
    """Wait for the page to reach a URL (a string or a predicate); say where it stopped and what
    the console said when it does not."""
    try:
        page.wait_for_url(where, timeout=15_000)
    except PlaywrightTimeout:
        raise AssertionError(
            f"the browser stopped at {page.url}\nconsole and CSP: {problems}\n"
            f"page: {page.content()[:2000]}") from None


def sign_in(page, user):
    expect(page.get_by_label("Email")).to_be_visible()
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password", exact=True).fill(user["password"])
    page.get_by_role("button", name="Sign in").click()


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_is_valid_provider_metadata(issuer, discovery):
    OpenIDProviderMetadata(discovery).validate()
    assert discovery["issuer"] == issuer
    assert discovery["authorization_endpoint"] == f"{issuer}/authorize"
    assert discovery["token_endpoint"] == f"{issuer}/v1/token"
    assert discovery["userinfo_endpoint"] == f"{issuer}/userinfo"
    assert discovery["end_session_endpoint"] == f"{issuer}/logout"
    assert discovery["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert discovery["response_types_supported"] == ["code"]
    keys = httpx.get(discovery["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all(key.get("kid") and key["kty"] == "RSA" for key in keys), keys


# --- Authlib ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["none", "client_secret_basic", "client_secret_post"])
def test_authlib_code_flow_with_pkce(stack, discovery, auth_method):
    user = new_user(stack)
    redirect_uri = f"http://127.0.0.1:{free_port()}/oidc/callback/"  # never fetched
    registered = register_client(stack, [redirect_uri], auth_method=auth_method, scope=SCOPE)
    client_id = registered["client_id"]
    client = OAuth2Client(
        client_id=client_id,
        client_secret=registered.get("client_secret"),
        token_endpoint_auth_method=auth_method,
        scope=SCOPE,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    )
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    assert "code_challenge=" in url and "code_challenge_method=S256" in url

    started = time.time()
    redirect = Agent().authorize(url, redirect_uri, user)
    assert redirect.status_code == 303, redirect.status_code
    location = redirect.headers["location"]
    params = query_of(location)
    assert params["state"] == state, location
    assert params["iss"] == discovery["issuer"], location  # RFC 9207
    assert params.get("code"), location

    token = client.fetch_token(discovery["token_endpoint"], authorization_response=location,
                               state=state, code_verifier=verifier)
    assert token["token_type"] == "Bearer", token
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0, token
    assert set(token["scope"].split()) == set(SCOPE.split()), token
    assert token.get("refresh_token"), token  # the client has the refresh_token grant

    claims = validate_id_token(token["id_token"], discovery, client_id, nonce,
                               token["access_token"])
    assert claims["aud"] in (client_id, [client_id]), claims
    assert claims["nonce"] == nonce
    assert claims.get("at_hash"), claims
    assert claims.get("sid"), claims
    assert started - 60 <= claims["auth_time"] <= time.time() + 60, claims
    assert claims["email"] == user["email"], claims
    assert isinstance(claims["email_verified"], bool), claims
    assert claims["name"] == user["name"], claims

    userinfo = client.get(discovery["userinfo_endpoint"])
    assert userinfo.status_code == 200, userinfo.text
    info = userinfo.json()
    assert info["sub"] == claims["sub"], info
    assert info["email"] == user["email"], info
    assert info["name"] == user["name"], info
    assert isinstance(info["email_verified"], bool), info
    posted = httpx.post(discovery["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {token['access_token']}"})
    assert posted.status_code == 200, posted.text
    assert posted.json()["sub"] == claims["sub"]

    if auth_method != "none":
        refreshed = client.refresh_token(discovery["token_endpoint"],
                                         refresh_token=token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"], refreshed
        assert refreshed["token_type"] == "Bearer", refreshed
        if "id_token" in refreshed:
            again = validate_id_token(refreshed["id_token"], discovery, client_id,
                                      access_token=refreshed["access_token"], claims_cls=IDToken)
            assert again["sub"] == claims["sub"] and again["iss"] == claims["iss"], again
        userinfo = httpx.get(discovery["userinfo_endpoint"], timeout=10,
                             headers={"Authorization": f"Bearer {refreshed['access_token']}"})
        assert userinfo.status_code == 200, userinfo.text
        assert userinfo.json()["email"] == user["email"]

    reused = token_request(discovery, registered, {
        "grant_type": "authorization_code", "code": params["code"],
        "redirect_uri": redirect_uri, "code_verifier": verifier,
    })
    assert reused.status_code == 400, (reused.status_code, reused.text)
    assert reused.json()["error"] == "invalid_grant", reused.text


def test_a_public_client_must_prove_its_code_verifier(stack, discovery):
    user = new_user(stack)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"  # never fetched
    registered = register_client(stack, [redirect_uri], auth_method="none")
    client_id = registered["client_id"]
    agent = Agent()

    url, state, _, _ = authorization_request(discovery, client_id, redirect_uri)
    query = urllib.parse.urlencode({k: v for k, v in query_of(url).items()
                                    if not k.startswith("code_challenge")})
    without_pkce = agent.request("GET", f"{discovery['authorization_endpoint']}?{query}")
    if without_pkce.is_redirect:
        location = without_pkce.headers["location"]
        assert location.startswith(redirect_uri), location
        assert query_of(location)["error"] == "invalid_request", location
        assert query_of(location)["state"] == state, location
    else:
        assert without_pkce.status_code == 400, (without_pkce.status_code, without_pkce.text)

    for verifier in ("a-wrong-verifier-" + generate_token(40), None):
        url, _, _, _ = authorization_request(discovery, client_id, redirect_uri)
        redirect = agent.authorize(url, redirect_uri, user)
        user = None  # signed in from now on: single sign-on
        code = query_of(redirect.headers["location"])["code"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if verifier:
            form["code_verifier"] = verifier
        response = token_request(discovery, registered, form)
        assert response.status_code == 400, (verifier, response.status_code, response.text)
        assert response.json()["error"] in ("invalid_grant", "invalid_request"), response.text


def test_prompt_none_and_prompt_login(stack, discovery):
    user = new_user(stack)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"  # never fetched
    registered = register_client(stack, [redirect_uri], auth_method="client_secret_basic")
    agent = Agent()

    url, state, _, _ = authorization_request(discovery, registered["client_id"], redirect_uri,
                                             prompt="none")
    response = agent.request("GET", url)
    assert response.status_code in (302, 303), (response.status_code, response.text)
    params = query_of(response.headers["location"])
    assert response.headers["location"].startswith(redirect_uri)
    assert params["error"] == "login_required" and params["state"] == state, params

    url, _, _, _ = authorization_request(discovery, registered["client_id"], redirect_uri)
    agent.authorize(url, redirect_uri, user)

    url, state, _, _ = authorization_request(discovery, registered["client_id"], redirect_uri,
                                             prompt="none")
    params = query_of(agent.authorize(url, redirect_uri).headers["location"])
    assert params.get("code") and params["state"] == state, params

    url, _, _, _ = authorization_request(discovery, registered["client_id"], redirect_uri,
                                         prompt="login")
    again = agent.request("GET", url)
    assert again.status_code == 200, (again.status_code, again.headers)
    login_form(again)


# --- mozilla-django-oidc ------------------------------------------------------------------------


@contextlib.contextmanager
def django_rp(port, env, work):
    """The relying party, migrated and served on `port`."""
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--verbosity", "0"], cwd=DJANGO_RP, env=env, check=True)
    with django_server(DJANGO_RP, port, env, work):
        yield


def django_users(env):
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--verbosity", "0", "-c",
         "from django.contrib.auth.models import User\n"
         "for u in User.objects.all(): print(u.email)"],
        cwd=DJANGO_RP, env=env, check=True, capture_output=True, text=True,
    ).stdout
    return out.split()


def test_mozilla_django_oidc_signs_a_user_in_through_the_gateway(stack, discovery, browser,
                                                               tmp_path):
    port = free_port()
    rp = f"http://127.0.0.1:{port}"
    registered = register_client(stack, [f"{rp}/oidc/callback/"], [f"{rp}/"],
                                 auth_method="client_secret_post", first_party=True)
    user = new_user(stack)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="rp.settings",
        RP_DATABASE=str(tmp_path / "rp.sqlite3"),
        OIDC_RP_CLIENT_ID=registered["client_id"],
        OIDC_RP_CLIENT_SECRET=registered["client_secret"],
        OIDC_OP_AUTHORIZATION_ENDPOINT=discovery["authorization_endpoint"],
        OIDC_OP_TOKEN_ENDPOINT=discovery["token_endpoint"],
        OIDC_OP_USER_ENDPOINT=discovery["userinfo_endpoint"],
        OIDC_OP_JWKS_ENDPOINT=discovery["jwks_uri"],
        OIDC_OP_LOGOUT_ENDPOINT=discovery["end_session_endpoint"],
    )
    authorize = discovery["authorization_endpoint"]
    with django_rp(port, env, tmp_path):
        context = browser.new_context()
        page = context.new_page()
        problems = watch_page(page)
        at_authorize = []
        page.on("response", lambda r: r.url.startswith(authorize) and at_authorize.append(r.status))

        page.goto(f"{rp}/oidc/authenticate/")
        assert page.url.startswith(authorize), page.url
        sign_in(page, user)
        arrive(page, f"{rp}/whoami/", problems)
        expect(page.locator("#email")).to_have_text(user["email"])
        assert django_users(env) == [user["email"]]  # Django created the user

        at_authorize.clear()
        page.goto(f"{rp}/oidc/authenticate/")
        arrive(page, f"{rp}/whoami/", problems)
        expect(page.locator("#email")).to_have_text(user["email"])
        assert at_authorize and all(300 <= s < 400 for s in at_authorize), (
            f"single sign-on showed a page at the authorization endpoint: {at_authorize}")
        assert django_users(env) == [user["email"]]

        # Signing out of Django signs out at the provider (RP-initiated logout) and comes back.
        page.goto(f"{rp}/oidc/logout/")
        arrive(page, lambda url: url.startswith(f"{rp}/?"), problems)
        assert page.url == f"{rp}/?state=django-logout", page.url
        expect(page.locator("#anonymous")).to_be_visible()
        page.goto(f"{rp}/oidc/authenticate/")
        assert page.url.startswith(authorize), page.url
        expect(page.get_by_label("Email")).to_be_visible()
        assert problems == [], problems
        context.close()


# --- consent and logout in Chromium -------------------------------------------------------------


def test_consent_and_logout(stack, discovery, browser, redirect_target):
    user = new_user(stack)
    callback = f"{redirect_target.url}/callback"
    logged_out = f"{redirect_target.url}/logged-out"
    registered = register_client(stack, [callback], [logged_out],
                                 auth_method="client_secret_basic", first_party=False)
    client_id = registered["client_id"]
    context = browser.new_context()
    page = context.new_page()
    problems = watch_page(page)
    at_callback = lambda url: url.startswith(f"{callback}?")  # noqa: E731

    # Deny: the client hears access_denied; the session stays.
    url, state, _, _ = authorization_request(discovery, client_id, callback)
    page.goto(url)
    sign_in(page, user)
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    assert page.locator('[name="decision"][value="allow"]').count() == 1
    assert page.locator('[name="decision"][value="deny"]').count() == 1
    page.get_by_role("button", name="Deny").click()
    arrive(page, at_callback, problems)
    params = query_of(page.url)
    assert params["error"] == "access_denied" and params["state"] == state, page.url
    assert "code" not in params, page.url

    # Allow, signed in already: consent without a login form, then a code.
    url, state, nonce, verifier = authorization_request(discovery, client_id, callback)
    page.goto(url)
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    assert page.get_by_label("Password", exact=True).count() == 0
    page.get_by_role("button", name="Allow").click()
    arrive(page, at_callback, problems)
    params = query_of(page.url)
    assert params["state"] == state and params.get("code"), page.url
    assert params["iss"] == discovery["issuer"], page.url
    response = token_request(discovery, registered, {
        "grant_type": "authorization_code", "code": params["code"],
        "redirect_uri": callback, "code_verifier": verifier,
    })
    assert response.status_code == 200, response.text
    token = response.json()
    claims = validate_id_token(token["id_token"], discovery, client_id, nonce,
                               token["access_token"])
    assert claims["email"] == user["email"]

    # RP-initiated logout back to the registered URI with the state.
    logout = discovery["end_session_endpoint"] + "?" + urllib.parse.urlencode({
        "id_token_hint": token["id_token"],
        "post_logout_redirect_uri": logged_out,
        "state": "xyz",
    })
    page.goto(logout)
    arrive(page, lambda url: url.startswith(logged_out), problems)
    assert page.url == f"{logged_out}?state=xyz", page.url

    # Signed out: the login form again.
    url, _, _, _ = authorization_request(discovery, client_id, callback)
    response = page.goto(url)
    assert response.status == 200, response.status
    assert page.url.startswith(discovery["authorization_endpoint"]), page.url
    expect(page.get_by_label("Email")).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    assert problems == [], problems
    context.close()
