"""The upload page as served (the browser tests drive it in Chromium)."""

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response


def test_page_names_the_endpoint_and_is_locked_down(make_app):
    client = Client(make_app(upload_page="on", upload_page_path="/upload/", base_path="/api/tus/"))
    page = client.get("/upload/")
    assert page.status_code == 200
    assert 'data-endpoint="/api/tus/"' in page.get_data(as_text=True)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "base-uri 'none'" in policy


def test_page_without_its_slash_redirects_so_relative_assets_resolve(make_app):
    client = Client(make_app(upload_page="on", upload_page_path="/upload/"))
    response = client.get("/upload")
    assert response.status_code == 308
    assert response.headers["Location"] == "/upload/"


def test_page_under_a_script_name_points_at_the_mounted_endpoint(make_app):
    app = DispatcherMiddleware(Response("outer"), {"/mount": make_app(upload_page="on")})
    page = Client(app).get("/mount/")
    assert 'data-endpoint="/mount/files/"' in page.get_data(as_text=True)


def test_assets_are_served_and_nothing_else(make_app):
    client = Client(make_app(upload_page="on"))
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert b"Tus-Resumable" in script.get_data()
    for path in ("/static/../page.py", "/static/%2e%2e/config.py", "/static/nothing.js",
                 "/static/index.html%00.js"):
        assert client.get(path).status_code == 404


def test_page_can_be_turned_off(make_app):
    assert Client(make_app(upload_page="off")).get("/").status_code == 404
