"""CORS: preflight, exposed headers, and origin allow-lists."""

from __future__ import annotations

import pytest
from conftest import OCTET, TUS, create, data_file, patch
from werkzeug.test import Client

from tuswsgi import ConfigError, create_app
from tuswsgi.config import load_config

TUS_REQUEST_HEADERS = (
    "Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Defer-Length",
    "Upload-Metadata", "Upload-Concat", "Upload-Checksum", "Content-Type",
    "X-HTTP-Method-Override", "X-Requested-With",
)
EXPOSED = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
    "Upload-Concat", "Upload-Expires", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
    "Tus-Extension", "Tus-Checksum-Algorithm",
)
ORIGIN = "https://a.example"


def tokens(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",") if item.strip()}


def preflight(client, path, method="PATCH", origin=ORIGIN, request_headers=None):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if request_headers:
        headers["Access-Control-Request-Headers"] = request_headers
    return client.options(path, headers=headers)


@pytest.mark.parametrize("method", ["POST", "PATCH", "HEAD", "DELETE", "GET"])
def test_preflight_on_collection_and_upload(client, method):
    upload = create(client, 5)
    for path in ("/files/", upload):
        response = preflight(client, path, method,
                             request_headers=", ".join(TUS_REQUEST_HEADERS).lower())
        assert response.status_code == 204
        assert response.data == b""
        assert method.lower() in tokens(response.headers["Access-Control-Allow-Methods"])
        allowed = tokens(response.headers["Access-Control-Allow-Headers"])
        assert {h.lower() for h in TUS_REQUEST_HEADERS} <= allowed
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_preflight_needs_no_tus_resumable_and_does_not_touch_uploads(client, upload_dir):
    upload = create(client, 5)
    patch(client, upload, b"ab", 0)
    before = sorted(p.name for p in upload_dir.iterdir())
    response = preflight(client, upload, "DELETE")
    assert response.status_code == 204
    assert "Tus-Resumable" not in response.headers
    assert sorted(p.name for p in upload_dir.iterdir()) == before
    assert data_file(upload_dir, upload).read_bytes() == b"ab"


def test_plain_options_is_tus_discovery(client):
    response = client.options("/files/", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "Tus-Version" in response.headers
    assert "creation" in response.headers["Tus-Extension"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def assert_cors(response, origin="*"):
    assert response.headers["Access-Control-Allow-Origin"] == origin
    exposed = tokens(response.headers["Access-Control-Expose-Headers"])
    assert {h.lower() for h in EXPOSED} <= exposed


def test_actual_responses_carry_cors_headers(client, upload_dir):
    origin = {"Origin": ORIGIN}
    response = client.post("/files/", headers={**TUS, **origin, "Upload-Length": "4"})
    assert response.status_code == 201
    assert_cors(response)
    path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    response = client.patch(path, data=b"data", headers={**TUS, **origin, "Upload-Offset": "0",
                                                         "Content-Type": OCTET})
    assert response.status_code == 204
    assert_cors(response)
    assert_cors(client.head(path, headers={**TUS, **origin}))
    download = client.get(path, headers=origin)
    assert download.data == b"data"
    assert_cors(download)
    assert data_file(upload_dir, path).read_bytes() == b"data"


def test_error_responses_carry_cors_headers_too(client):
    """A browser can only read the ERR_ code when the error is CORS-readable."""
    response = client.patch("/files/" + "0" * 32, data=b"x",
                            headers={**TUS, "Origin": ORIGIN, "Upload-Offset": "0",
                                     "Content-Type": OCTET})
    assert response.status_code == 404
    assert_cors(response)
    response = client.post("/files/", headers={"Origin": ORIGIN, "Upload-Length": "1"})
    assert response.status_code == 412
    assert_cors(response)


def test_no_origin_means_no_cors_headers(client):
    response = client.post("/files/", headers={**TUS, "Upload-Length": "1"})
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers


@pytest.fixture
def restricted(make_app):
    return Client(make_app(cors_origins="https://a.example, https://b.example"))


def test_allowed_origin_is_reflected_with_vary(restricted):
    for origin in ("https://a.example", "https://b.example"):
        response = restricted.post("/files/", headers={**TUS, "Origin": origin,
                                                      "Upload-Length": "1"})
        assert response.status_code == 201
        assert_cors(response, origin)
        assert "origin" in tokens(response.headers["Vary"])
        response = preflight(restricted, "/files/", "POST", origin=origin)
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "https://a.example.evil.example",
                                    "http://a.example", "null", "*"])
def test_foreign_origin_gets_no_allow_origin(restricted, upload_dir, origin):
    response = restricted.post("/files/", headers={**TUS, "Origin": origin, "Upload-Length": "3"})
    # The request itself is served (CORS is enforced by the browser) ...
    assert response.status_code == 201
    # ... but the browser is not allowed to read it.
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers
    response = preflight(restricted, "/files/", "POST", origin=origin)
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("origin", [None, "https://evil.example"])
def test_vary_origin_whenever_the_allow_list_is_consulted(restricted, origin):
    path = create(restricted, 1)
    patch(restricted, path, b"x", 0)
    headers = {"Origin": origin} if origin else {}
    response = restricted.get(path, headers=headers)
    assert response.data == b"x"
    assert "origin" in tokens(response.headers.get("Vary", ""))


def test_wildcard_needs_no_vary(client):
    response = client.post("/files/", headers={**TUS, "Origin": ORIGIN, "Upload-Length": "1"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "origin" not in tokens(response.headers.get("Vary", ""))


# -- credentials (cookies, HTTP auth) -------------------------------------------------------

@pytest.fixture
def credentialed(make_app):
    return Client(make_app(cors_origins="https://a.example", cors_allow_credentials="on"))


def assert_credentials_allowed(response, origin=ORIGIN):
    assert response.headers["Access-Control-Allow-Origin"] == origin  # echoed, never *
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in tokens(response.headers["Vary"])


def test_credentials_are_allowed_on_preflight_and_actual_responses(credentialed, upload_dir):
    response = preflight(credentialed, "/files/", "POST", request_headers="tus-resumable")
    assert response.status_code == 204
    assert_credentials_allowed(response)
    response = credentialed.post("/files/", headers={**TUS, "Origin": ORIGIN, "Upload-Length": "2",
                                                     "Cookie": "session=abc"})
    assert response.status_code == 201
    assert_credentials_allowed(response)
    path = "/files/" + response.headers["Location"].rsplit("/", 1)[1]
    response = patch(credentialed, path, b"ok", 0, Origin=ORIGIN)
    assert response.status_code == 204
    assert_credentials_allowed(response)
    assert_credentials_allowed(credentialed.head(path, headers={**TUS, "Origin": ORIGIN}))
    assert data_file(upload_dir, path).read_bytes() == b"ok"


def test_credentialed_errors_are_readable_by_the_allowed_origin(credentialed):
    response = credentialed.head("/files/" + "0" * 32, headers={**TUS, "Origin": ORIGIN})
    assert response.status_code == 404
    assert_credentials_allowed(response)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "*"])
def test_credentials_are_never_allowed_for_another_origin(credentialed, origin):
    for response in (preflight(credentialed, "/files/", "POST", origin=origin),
                     credentialed.post("/files/", headers={**TUS, "Origin": origin,
                                                           "Upload-Length": "1"})):
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "origin" in tokens(response.headers["Vary"])


def test_credentials_are_off_by_default(restricted):
    response = restricted.post("/files/", headers={**TUS, "Origin": "https://a.example",
                                                  "Upload-Length": "1"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origins", ["*", "https://a.example *"])
def test_credentials_with_any_origin_is_a_configuration_error(origins, tmp_path):
    with pytest.raises(ConfigError, match=r"cors_allow_credentials.*cannot be combined"):
        create_app(upload_dir=str(tmp_path), cors_origins=origins, cors_allow_credentials="on")
    with pytest.raises(ConfigError, match="cors_allow_credentials"):  # the default is *
        load_config(None, environ={"TUSWSGI_CORS_ALLOW_CREDENTIALS": "on"})
