"""tus 1.0.0: one short handler per method, from request headers to response headers.

Every tus request header is read here (through :mod:`tuswsgi.protocol`), and
every tus response header is written here.  Upload state changes go through
:class:`~tuswsgi.service.UploadService`; this module never sees a file path.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from typing import Optional
from urllib.parse import quote, urlsplit

from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import http_date
from werkzeug.wrappers import Request
from werkzeug.wsgi import wrap_file

from .body import CONNECTION_KEY, RequestBody
from .errors import TusError
from .frontend import request_body, upload_url
from .hooks import RequestInfo
from .protocol import (
    PATCH_CONTENT_TYPE,
    SUPPORTED_VERSIONS,
    decode_metadata,
    is_media_type,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_uint,
    serialize_metadata,
)
from .responses import Response
from .service import Checksum, LateChecksum, Outcome, UploadRequest, UploadService
from .upload import UploadInfo

#: Media types a browser may show inline; anything else downloads as an attachment
#: (an HTML or SVG upload rendered on our origin could run script).
INLINE_TYPES = re.compile(
    r"(image/(png|jpeg|gif|webp|avif|bmp)|audio/[a-z0-9.+-]+|video/[a-z0-9.+-]+|text/plain)")

#: Response headers a browser client must be allowed to read (CORS).
EXPOSED_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata",
    "Upload-Concat", "Upload-Expires", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
    "Tus-Extension", "Tus-Checksum-Algorithm", "X-Request-ID",
)

#: Request headers a browser client may send (CORS preflight).
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "Origin", "X-Requested-With", "X-Request-ID",
    "X-HTTP-Method-Override", "Tus-Resumable", "Upload-Length", "Upload-Offset",
    "Upload-Defer-Length", "Upload-Metadata", "Upload-Concat", "Upload-Checksum",
)


class TusHandlers:
    def __init__(self, service: UploadService) -> None:
        self.service = service
        self.config = service.config
        extensions = ["creation", "creation-with-upload", "creation-defer-length",
                      "termination", "checksum", "concatenation", "concatenation-unfinished"]
        if self.config.expiration:
            extensions.insert(5, "expiration")
        self.discovery_headers = [
            ("Tus-Version", ",".join(SUPPORTED_VERSIONS)),
            ("Tus-Extension", ",".join(extensions)),
            ("Tus-Checksum-Algorithm", ",".join(self.config.checksum_algorithms)),
        ]
        if self.config.max_size:
            self.discovery_headers.append(("Tus-Max-Size", str(self.config.max_size)))

    # -- OPTIONS -------------------------------------------------------------
    def options(self, request: Request, upload_id: Optional[str] = None) -> Response:
        """200 with an empty body: tus allows 200 or 204; tusd answers 200 (some old
        browsers mishandle a 204 here) and conformance suites expect it.
        ``checksum-trailer`` is offered only where trailers reach the application."""
        response = Response(status=200, headers=self.discovery_headers)
        if self.config.checksum_trailer and request.environ.get(CONNECTION_KEY) is not None:
            extensions = response.headers["Tus-Extension"].split(",")
            extensions.insert(extensions.index("checksum") + 1, "checksum-trailer")
            response.headers["Tus-Extension"] = ",".join(extensions)
        return response

    # -- POST ------------------------------------------------------------------
    def post(self, request: Request, hook: Optional[RequestInfo],
             upload_id: Optional[str] = None) -> Response:
        headers = request.headers
        metadata = parse_metadata(headers.get("Upload-Metadata"), self.config.max_metadata_size)
        concat, part_urls = parse_concat(headers.get("Upload-Concat"))
        body = self._body(request, required=False)
        if concat == "final":
            if "Upload-Length" in headers or "Upload-Defer-Length" in headers:
                raise TusError("ERR_INVALID_CONCAT", "a final upload takes no Upload-Length")
            if body is not None:
                raise TusError("ERR_UPLOAD_IS_FINAL", "a final upload takes no body")
            part_ids = [self._id_from_url(request, url) for url in part_urls]
            outcome = self.service.concatenate(part_ids, UploadRequest(metadata=metadata, hook=hook))
            return self._created(request, outcome)
        length = self._creation_length(headers)
        self.service.check_size(length)
        if body is not None and length is not None and body.length is not None \
                and body.length > length:
            raise TusError("ERR_SIZE_EXCEEDED", f"{body.length} bytes sent for a {length}-byte upload")
        checksums = self._checksums(request) if body is not None else ()
        late = self._late_checksum(request, body, checksums)
        outcome = self.service.create(UploadRequest(
            body=body, length=length, checksums=checksums, late_checksum=late, metadata=metadata,
            concat=concat, hook=hook))
        return self._created(request, outcome)

    def _creation_length(self, headers: Headers) -> Optional[int]:
        length = parse_uint(headers.get("Upload-Length"), "ERR_INVALID_LENGTH")
        defer = headers.get("Upload-Defer-Length")
        if defer is not None and defer != "1":
            raise TusError("ERR_INVALID_DEFER_LENGTH", f"got {defer[:40]!r}")
        if length is None and defer is None:
            raise TusError("ERR_LENGTH_REQUIRED")
        if length is not None and defer is not None:
            raise TusError("ERR_LENGTH_AND_DEFER")
        return length

    def _created(self, request: Request, outcome: Outcome) -> Response:
        info = outcome.info
        response = Response(status=201, headers=[*self._expires(info), *outcome.headers.items()])
        response.headers["Location"] = self._location(request, info.id)
        response.headers["Upload-Offset"] = str(info.offset)
        return response

    # -- HEAD ------------------------------------------------------------------
    def head(self, request: Request, hook: Optional[RequestInfo], upload_id: str) -> Response:
        info = self.service.head(upload_id, UploadRequest(hook=hook))
        response = Response(status=200, headers=self._expires(info))
        # A final being assembled: its offset is what it holds (the extension leaves it
        # undefined; core tus requires one), its length appears once every part's is known.
        response.headers["Upload-Offset"] = str(info.offset)
        if info.length is not None:
            response.headers["Upload-Length"] = str(info.length)
        elif info.concat != "final":
            response.headers["Upload-Defer-Length"] = "1"
        if info.metadata:
            response.headers["Upload-Metadata"] = serialize_metadata(info.metadata)
        if info.concat == "partial":
            response.headers["Upload-Concat"] = "partial"
        elif info.concat == "final":
            urls = " ".join(self._location(request, part) for part in info.parts)
            response.headers["Upload-Concat"] = f"final;{urls}"
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- PATCH -----------------------------------------------------------------
    def patch(self, request: Request, hook: Optional[RequestInfo], upload_id: str) -> Response:
        if request.mimetype != PATCH_CONTENT_TYPE:
            raise TusError("ERR_INVALID_CONTENT_TYPE")
        offset = parse_uint(request.headers.get("Upload-Offset"), "ERR_INVALID_OFFSET")
        if offset is None:
            raise TusError("ERR_INVALID_OFFSET", "header is missing")
        length = parse_uint(request.headers.get("Upload-Length"), "ERR_INVALID_LENGTH")
        checksums = self._checksums(request)
        body = self._body(request, required=True)
        late = self._late_checksum(request, body, checksums)
        outcome = self.service.append(upload_id, UploadRequest(
            body=body, offset=offset, length=length, checksums=checksums, late_checksum=late,
            hook=hook))
        response = Response(status=204, headers=self._expires(outcome.info))
        response.headers["Upload-Offset"] = str(outcome.info.offset)
        response.headers.extend(outcome.headers.items())
        return response

    # -- DELETE ----------------------------------------------------------------
    def delete(self, request: Request, hook: Optional[RequestInfo], upload_id: str) -> Response:
        self.service.terminate(upload_id, UploadRequest(hook=hook))
        return Response(status=204)

    # -- GET (download) ----------------------------------------------------------
    def get(self, request: Request, hook: Optional[RequestInfo], upload_id: str) -> Response:
        if not self.config.download:
            raise TusError("ERR_DOWNLOAD_DISABLED")
        info, data = self.service.open_download(upload_id)
        assert info.length is not None  # only finished uploads are served
        meta = decode_metadata(info.metadata)
        filetype = meta.get("filetype") or meta.get("type") or ""
        mimetype = filetype if is_media_type(filetype) else "application/octet-stream"
        response = Response(wrap_file(request.environ, data), direct_passthrough=True)
        response.headers["Content-Type"] = mimetype  # as stored: no charset is invented
        response.content_length = info.length
        response.last_modified = datetime.fromtimestamp(info.modified, timezone.utc)
        response.set_etag(f"{info.id}-{info.length}")
        disposition = "inline" if INLINE_TYPES.fullmatch(mimetype.lower()) else "attachment"
        response.headers.set("Content-Disposition", disposition,
                             **_filename_params(meta.get("filename") or meta.get("name") or info.id))
        response.cache_control.no_cache = True
        if not request.headers.get("Range", "bytes=").strip().lower().startswith("bytes="):
            request.environ.pop("HTTP_RANGE")  # RFC 9110 14.2: ignore unknown range units
        try:
            response.make_conditional(request, accept_ranges=True, complete_length=info.length)
            return response
        except RequestedRangeNotSatisfiable:
            data.close()
            raise TusError("ERR_RANGE_NOT_SATISFIABLE",
                           headers=[("Content-Range", f"bytes */{info.length}")]) from None

    # -- helpers -----------------------------------------------------------------
    def _body(self, request: Request, *, required: bool) -> Optional[RequestBody]:
        """The request body; ``None`` for a creation request without one."""
        body = request_body(request, self.config.network_timeout)
        if body is None:
            return RequestBody.empty() if required else None
        if not required and request.mimetype != PATCH_CONTENT_TYPE:
            raise TusError("ERR_INVALID_CONTENT_TYPE")
        return body

    def _checksums(self, request: Request) -> tuple[Checksum, ...]:
        parsed = parse_checksum(request.headers.get("Upload-Checksum"),
                                self.config.checksum_algorithms)
        return (Checksum(*parsed),) if parsed else ()

    def _late_checksum(self, request: Request, body: Optional[RequestBody],
                       checksums: tuple[Checksum, ...]) -> Optional[LateChecksum]:
        """checksum-trailer: ``Upload-Checksum`` as a trailer of a chunked body.

        The algorithm is only known at the end, so a body whose request announces
        the trailer (``Trailer: Upload-Checksum``, RFC 9110 6.6.2) is hashed with
        every algorithm offered, and its chunk is tentative, as with the header.
        An unannounced trailer was not hashed for: it is refused, with its chunk.
        """
        if body is None:  # a creation without a body: nothing to verify, as for the header
            return None
        announced = "upload-checksum" in _field_names(request.headers.get("Trailer", ""))
        if announced and checksums:
            raise TusError("ERR_CHECKSUM_TWICE", "the header, and a trailer announced")
        if announced and not (body.is_chunked and body.reads_trailers):
            raise TusError("ERR_TRAILER_UNAVAILABLE", "the body is not chunked" if not body.is_chunked
                           else "this WSGI server does not pass trailers on")
        if not (body.is_chunked and body.reads_trailers):
            return None
        algorithms = self.config.checksum_algorithms if announced else ()
        return LateChecksum(algorithms, lambda: self._trailer_checksum(body, announced, bool(checksums)))

    def _trailer_checksum(self, body: RequestBody, announced: bool,
                          has_header: bool) -> Optional[Checksum]:
        values = body.trailer("Upload-Checksum")
        if not values:
            if announced:
                raise TusError("ERR_TRAILER_MISSING")
            return None
        if has_header:
            raise TusError("ERR_CHECKSUM_TWICE", "the header, and a trailer")
        if not announced:
            raise TusError("ERR_TRAILER_NOT_ANNOUNCED")
        if len(values) > 1:
            raise TusError("ERR_INVALID_CHECKSUM", "the trailer came twice")
        parsed = parse_checksum(values[0], self.config.checksum_algorithms)
        return Checksum(*parsed) if parsed else None

    @staticmethod
    def _expires(info: UploadInfo) -> list[tuple[str, str]]:
        if info.expires is None:
            return []
        return [("Upload-Expires", http_date(info.expires))]

    def _location(self, request: Request, upload_id: str) -> str:
        return upload_url(request, self.config.base_path, upload_id)

    def _id_from_url(self, request: Request, url: str) -> str:
        """The upload ID in a relative or absolute upload URL of this endpoint."""
        try:
            path = urlsplit(url).path
        except ValueError:
            raise TusError("ERR_INVALID_CONCAT", f"{url[:80]!r} is not a URL") from None
        prefix = request.script_root + self.config.base_path
        for candidate in (prefix, self.config.base_path):
            if path.startswith(candidate) and "/" not in path[len(candidate):]:
                return path[len(candidate):]
        raise TusError("ERR_INVALID_CONCAT", f"{url[:80]!r} is not an upload of this server")


def _field_names(value: str) -> set[str]:
    """The field names a ``Trailer`` header lists, in lower case."""
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def _filename_params(name: str) -> dict[str, str]:
    """RFC 6266 parameters: an ASCII fallback, plus ``filename*`` for anything else."""
    clean = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    clean = clean.replace("/", "_").replace("\\", "_").strip(" .") or "download"
    clean = clean[:200]
    ascii_name = unicodedata.normalize("NFKD", clean).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r'["%;]', "_", ascii_name).strip(" .") or "download"
    if ascii_name == clean:
        return {"filename": clean}
    return {"filename": ascii_name, "filename*": "UTF-8''" + quote(clean, safe="!#$&+-.^_`|~")}

