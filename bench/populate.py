"""Fill an upload directory with N uploads in tuswsgi's store format, directly.

Faster than N POSTs: for each upload, ``<id>`` (the data, empty) and
``<id>.info`` (the JSON record of tuswsgi.upload.UploadInfo.to_record()).
Used by the "scaling with work" section of bench/run.py::

    python bench/populate.py DIR N [LENGTH]
"""

import json
import os
import secrets
import sys
import time


def populate(directory: str, count: int, length: int = 1 << 30) -> list[str]:
    """Create ``count`` empty uploads of declared ``length``; return their IDs."""
    os.makedirs(directory, exist_ok=True)
    now = time.time()
    ids = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for _ in range(count):
        upload_id = secrets.token_hex(16)
        record = {"id": upload_id, "length": length,
                  "metadata": [["filename", "YmVuY2guYmlu"], ["filetype", "YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt"]],
                  "created": now, "concat": None, "parts": [], "gone_since": None}
        os.close(os.open(os.path.join(directory, upload_id), flags, 0o644))
        fd = os.open(os.path.join(directory, upload_id + ".info"), flags, 0o644)
        os.write(fd, json.dumps(record).encode())
        os.close(fd)
        ids.append(upload_id)
    return ids


if __name__ == "__main__":
    target, n = sys.argv[1], int(sys.argv[2])
    started = time.perf_counter()
    populate(target, n, int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 30)
    print(f"{n} uploads in {target} ({time.perf_counter() - started:.1f}s)")
