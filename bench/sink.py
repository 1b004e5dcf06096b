"""Raw-copy WSGI sink: the floor any WSGI upload server under gunicorn can reach.

It copies ``wsgi.input`` to a file in bounded blocks and answers like a tus
server just enough for the benchmark driver: POST creates an empty file (201 +
Location), HEAD reports its size as ``Upload-Offset``, PATCH appends the body
and answers 204 with the new ``Upload-Offset``.  No validation, no locking, no
framework: whatever tuswsgi spends beyond this is its own cost.

Serve with the same gunicorn settings as tuswsgi::

    SINK_DIR=/some/dir gunicorn -c python:tuswsgi.gunicorn_conf --chdir bench sink:app
"""

import os
import uuid

BLOCK = 1 << 20
DIRECTORY = os.environ.get("SINK_DIR", "/tmp/tuswsgi-sink")
PREFIX = "/files/"
os.makedirs(DIRECTORY, exist_ok=True)


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    common = [("Tus-Resumable", "1.0.0")]
    if method == "POST":
        upload_id = uuid.uuid4().hex
        os.close(os.open(os.path.join(DIRECTORY, upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        start_response("201 Created", [*common, ("Location", PREFIX + upload_id), ("Upload-Offset", "0"), ("Content-Length", "0")])
        return [b""]
    upload_id = path[len(PREFIX):] if path.startswith(PREFIX) else ""
    if not upload_id or "/" in upload_id or upload_id.startswith("."):
        start_response("404 Not Found", [*common, ("Content-Length", "0")])
        return [b""]
    file_path = os.path.join(DIRECTORY, upload_id)
    if method == "HEAD":
        try:
            size = os.stat(file_path).st_size
        except FileNotFoundError:
            start_response("404 Not Found", [*common, ("Content-Length", "0")])
            return [b""]
        start_response("200 OK", [*common, ("Upload-Offset", str(size)), ("Cache-Control", "no-store"), ("Content-Length", "0")])
        return [b""]
    if method == "PATCH":
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"]
        with open(file_path, "ab", buffering=0) as out:
            while remaining > 0:
                chunk = body.read(min(BLOCK, remaining))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
            offset = out.tell()
        start_response("204 No Content", [*common, ("Upload-Offset", str(offset))])
        return [b""]
    start_response("405 Method Not Allowed", [*common, ("Content-Length", "0")])
    return [b""]
