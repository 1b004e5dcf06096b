"""DELETE (termination): the data goes, and the upload answers 410 afterwards."""

import pytest
from conftest import OCTET, TUS, create, data_file, patch


def test_delete_removes_data(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    assert data_file(upload_dir, path).exists()
    response = client.delete(path, headers=TUS)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert not data_file(upload_dir, path).exists()
    upload_id = path.rsplit("/", 1)[1]
    assert not (upload_dir / (upload_id + ".pending")).exists()


def test_delete_finished_upload(client, upload_dir):
    path = create(client, 3)
    patch(client, path, b"abc", 0)
    assert client.delete(path, headers=TUS).status_code == 204
    assert not data_file(upload_dir, path).exists()
    assert client.get(path).status_code == 410


def test_delete_deferred_upload(client, upload_dir):
    path = create(client, Upload_Defer_Length="1")
    assert client.delete(path, headers=TUS).status_code == 204
    assert not data_file(upload_dir, path).exists()


def test_head_after_delete_is_410(client):
    path = create(client, 10)
    client.delete(path, headers=TUS)
    response = client.head(path, headers=TUS)
    assert response.status_code == 410
    assert "Upload-Offset" not in response.headers
    assert "Upload-Length" not in response.headers


def test_patch_after_delete_is_410_and_writes_nothing(client, upload_dir):
    path = create(client, 10)
    patch(client, path, b"abc", 0)
    client.delete(path, headers=TUS)
    response = patch(client, path, b"def", 3)
    assert response.status_code == 410
    assert response.get_data(as_text=True).startswith("ERR_UPLOAD_GONE")
    assert "Upload-Offset" not in response.headers
    assert not data_file(upload_dir, path).exists()
    response = patch(client, path, b"abc", 0)
    assert response.status_code == 410
    assert not data_file(upload_dir, path).exists()


def test_delete_twice_is_410(client, upload_dir):
    path = create(client, 10)
    assert client.delete(path, headers=TUS).status_code == 204
    assert client.delete(path, headers=TUS).status_code == 410
    assert not data_file(upload_dir, path).exists()


@pytest.mark.parametrize("upload_id", ["0" * 32, "abc", "does-not-exist"])
def test_delete_unknown_is_404(client, upload_dir, upload_id):
    response = client.delete("/files/" + upload_id, headers=TUS)
    assert response.status_code == 404
    assert response.get_data(as_text=True).startswith("ERR_NOT_FOUND")
    assert list(upload_dir.glob("*.info")) == []


def test_delete_leaves_other_uploads_alone(client, upload_dir):
    keep = create(client, 3)
    patch(client, keep, b"abc", 0)
    drop = create(client, 3)
    patch(client, drop, b"xyz", 0)
    assert client.delete(drop, headers=TUS).status_code == 204
    assert data_file(upload_dir, keep).read_bytes() == b"abc"
    head = client.head(keep, headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "3"


def test_post_with_body_after_delete_does_not_resurrect(client, upload_dir):
    path = create(client, 3)
    client.delete(path, headers=TUS)
    response = client.post(path, data=b"abc", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0", "Content-Type": OCTET})
    assert response.status_code == 410
    assert not data_file(upload_dir, path).exists()
