"""Location URLs behind reverse proxies and under a mount point."""

from __future__ import annotations

import pytest
from conftest import OCTET, TUS, data_file
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response as PlainResponse


def post(client, path="/files/", length=3, **headers):
    response = client.post(path, headers={**TUS, "Upload-Length": str(length), **headers})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.headers["Location"]


def test_location_defaults_to_request_host(client, upload_dir):
    location = post(client)
    prefix = "http://localhost/files/"
    assert location.startswith(prefix)
    upload_id = location[len(prefix):]
    assert len(upload_id) == 32
    assert (upload_dir / upload_id).is_file()
    assert (upload_dir / (upload_id + ".info")).is_file()


def test_location_uses_host_header(client):
    location = post(client, Host="uploads.example:8080")
    assert location.startswith("http://uploads.example:8080/files/")


@pytest.fixture
def proxied(make_app):
    return Client(make_app(behind_proxy="on"))


def test_x_forwarded_proto_and_host(proxied, upload_dir):
    location = post(proxied, **{"X-Forwarded-Proto": "https",
                                "X-Forwarded-Host": "public.example"})
    assert location.startswith("https://public.example/files/")
    upload_id = location.rsplit("/", 1)[1]
    assert (upload_dir / upload_id).is_file()


def test_x_forwarded_port(proxied):
    location = post(proxied, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
                                "X-Forwarded-Port": "8443"})
    assert location.startswith("https://public.example:8443/files/")


def test_rfc7239_forwarded(proxied):
    location = post(proxied, Forwarded='for=192.0.2.1;proto=https;host="public.example"')
    assert location.startswith("https://public.example/files/")
    location = post(proxied, Forwarded="for=192.0.2.1;proto=https;host=public.example")
    assert location.startswith("https://public.example/files/")


def test_x_forwarded_wins_over_forwarded(proxied):
    location = post(proxied, Forwarded="proto=http;host=other.example",
                    **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"})
    assert location.startswith("https://public.example/files/")


def test_forwarded_trusts_the_last_hop_like_x_forwarded(proxied):
    location = post(proxied, Forwarded="host=evil.example;proto=http, "
                                       "for=192.0.2.1;proto=https;host=public.example")
    assert location.startswith("https://public.example/files/")


def test_client_supplied_x_forwarded_host_only_last_hop_counts(proxied):
    location = post(proxied, **{"X-Forwarded-Proto": "https",
                                "X-Forwarded-Host": "evil.example, public.example"})
    assert location.startswith("https://public.example/files/")


def test_x_forwarded_prefix(proxied, upload_dir):
    location = post(proxied, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
                                "X-Forwarded-Prefix": "/upload"})
    assert location.startswith("https://public.example/upload/files/")
    upload_id = location.rsplit("/", 1)[1]
    # The proxy strips the prefix again: the upload is reachable at /files/<id>.
    response = proxied.patch("/files/" + upload_id, data=b"abc",
                             headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET,
                                      "X-Forwarded-Prefix": "/upload"})
    assert response.status_code == 204
    assert (upload_dir / upload_id).read_bytes() == b"abc"


def test_concat_final_with_forwarded_prefix_urls(proxied, upload_dir):
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example",
           "X-Forwarded-Prefix": "/upload"}
    urls = []
    for data in (b"ab", b"cd"):
        url = post(proxied, length=2, **{"Upload-Concat": "partial", **fwd})
        upload_id = url.rsplit("/", 1)[1]
        response = proxied.patch("/files/" + upload_id, data=data,
                                 headers={**TUS, **fwd, "Upload-Offset": "0",
                                          "Content-Type": OCTET})
        assert response.status_code == 204
        urls.append(url)
    response = proxied.post("/files/", headers={**TUS, **fwd,
                                                "Upload-Concat": "final;" + " ".join(urls)})
    assert response.status_code == 201, response.get_data(as_text=True)
    final_id = response.headers["Location"].rsplit("/", 1)[1]
    assert response.headers["Location"].startswith("https://public.example/upload/files/")
    assert (upload_dir / final_id).read_bytes() == b"abcd"
    head = proxied.head("/files/" + final_id, headers={**TUS, **fwd})
    assert head.headers["Upload-Concat"] == "final;" + " ".join(urls)


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"},
    {"Forwarded": "proto=https;host=public.example"},
    {"X-Forwarded-Prefix": "/upload"},
])
def test_forwarding_headers_ignored_without_behind_proxy(client, headers):
    location = post(client, **headers)
    assert location.startswith("http://localhost/files/")
    assert "public.example" not in location and "/upload" not in location


# -- mounted under a script name -----------------------------------------------------

def other_app(environ, start_response):
    return PlainResponse("other")(environ, start_response)


@pytest.fixture
def mounted(make_app):
    tus = make_app()
    return Client(DispatcherMiddleware(other_app, {"/upload": tus}))


def test_mounted_location_includes_script_name(mounted, upload_dir):
    location = post(mounted, "/upload/files/", length=6)
    assert location.startswith("http://localhost/upload/files/")
    upload_id = location.rsplit("/", 1)[1]
    path = "/upload/files/" + upload_id
    response = mounted.patch(path, data=b"abc", headers={**TUS, "Upload-Offset": "0",
                                                         "Content-Type": OCTET})
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    head = mounted.head(path, headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "3"
    assert head.headers["Upload-Length"] == "6"
    response = mounted.patch(path, data=b"def", headers={**TUS, "Upload-Offset": "3",
                                                         "Content-Type": OCTET})
    assert response.headers["Upload-Offset"] == "6"
    assert data_file(upload_dir, path).read_bytes() == b"abcdef"
    assert mounted.get(path).data == b"abcdef"


def test_unmounted_path_does_not_reach_tus(mounted, upload_dir):
    response = mounted.post("/files/", headers={**TUS, "Upload-Length": "1"})
    assert response.data == b"other"
    assert not upload_dir.exists() or not any(upload_dir.iterdir())


@pytest.mark.parametrize("absolute", [True, False])
def test_mounted_concat_final(mounted, upload_dir, absolute):
    urls = []
    for data in (b"hello ", b"world"):
        url = post(mounted, "/upload/files/", length=len(data), **{"Upload-Concat": "partial"})
        path = url.replace("http://localhost", "")
        response = mounted.patch(path, data=data, headers={**TUS, "Upload-Offset": "0",
                                                           "Content-Type": OCTET})
        assert response.status_code == 204
        urls.append(url if absolute else path)
    response = mounted.post("/upload/files/",
                            headers={**TUS, "Upload-Concat": "final;" + " ".join(urls)})
    assert response.status_code == 201, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith("http://localhost/upload/files/")
    final_id = location.rsplit("/", 1)[1]
    assert (upload_dir / final_id).read_bytes() == b"hello world"
    head = mounted.head("/upload/files/" + final_id, headers=TUS)
    assert head.headers["Upload-Length"] == "11"
    assert head.headers["Upload-Concat"].startswith("final;http://localhost/upload/files/")


def test_concat_with_url_of_another_path_is_refused(mounted, upload_dir):
    url = post(mounted, "/upload/files/", length=1, **{"Upload-Concat": "partial"})
    mounted.patch(url.replace("http://localhost", ""), data=b"x",
                  headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET})
    bad = url.replace("/upload/files/", "/elsewhere/")
    response = mounted.post("/upload/files/", headers={**TUS, "Upload-Concat": "final;" + bad})
    assert response.status_code == 400
    assert response.data.startswith(b"ERR_INVALID_CONCAT")
    assert len(list(upload_dir.glob("*.info"))) == 1
