"""The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload),
interop versions 3 to 9, beside tus 1.0.0 on the same endpoint.

Every draft header is read and written here; the uploads themselves are ordinary
ones of :class:`~tuswsgi.service.UploadService`, so hooks, metrics, limits,
locking, hand-over, expiration and the CLI apply unchanged.

What differs between interop versions (``Upload-Draft-Interop-Version``):

====  =======================================================================
3     completion is ``Upload-Incomplete`` (inverted); appends answer 201
4-5   completion is ``Upload-Complete``; appends answer 201
6     PATCH needs ``Content-Type: application/partial-upload``; problem types;
      ``Upload-Limit`` with ``expires``
7-8   PATCH must say ``Upload-Complete``; an incomplete append answers 204 with
      ``Upload-Complete: ?0``, the completing one 200 with ``?1``; ``max-age``
9     (the editor's copy after draft -11) ``Upload-Complete`` on a creation or
      append response says whether it comes from the target resource: ``?1``
      on the completing answer and on the application's refusals (pre-create,
      pre-finish), ``?0`` on every protocol error (a 409 always); no
      ``completed-upload`` problem type (an append to a finished upload is a
      409 at another offset, a 400 with bytes, a replay of the final 200 when
      empty); ``Incremental`` may be sent and is ignored; an append past the
      known length makes the upload invalid (it answers 410 from then on)
====  =======================================================================

A request with no interop version but with ``Upload-Complete``/``Upload-Incomplete``
or ``Content-Type: application/partial-upload`` is treated as the latest version,
without the 104 interim response (the drafts allow it only with a matching
version); so is a ``HEAD``, ``PATCH``, ``DELETE`` or ``GET`` of an upload that names
no protocol at all, as a client of the final RFC sends them (see
:func:`interop_version`).  Errors are ``application/problem+json`` carrying the
problem type the draft defines, or one of the digest problem types, or
``about:blank``, and tuswsgi's stable ``code``.
"""

from __future__ import annotations

import json
import re
import time
from email.message import Message
from typing import Callable, Optional

from werkzeug.wrappers import Request

from .body import RequestBody
from .digests import parse_digests
from .errors import TusError
from .frontend import request_body, send_interim, upload_url
from .hooks import RequestInfo
from .protocol import PATCH_CONTENT_TYPE, encode_metadata, is_media_type, parse_metadata
from .responses import Response
from .service import Checksum, UploadRequest, UploadService
from .upload import UploadInfo

SUPPORTED_VERSIONS = range(3, 10)
LATEST_VERSION = 9
PARTIAL_UPLOAD_TYPE = "application/partial-upload"
PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#"

#: Problem types the draft defines, by tuswsgi error code.
PROBLEM_TYPES = {
    "ERR_MISMATCHED_OFFSET": "mismatching-upload-offset",
    "ERR_INCONSISTENT_LENGTH": "inconsistent-upload-length",
    "ERR_SIZE_EXCEEDED": "inconsistent-upload-length",
    "ERR_LENGTH_ALREADY_SET": "inconsistent-upload-length",  # another request said otherwise
    "ERR_LENGTH_TOO_SMALL": "inconsistent-upload-length",    # below the bytes received
    "ERR_UPLOAD_COMPLETED": "completed-upload",  # before interop 9 only
    # draft-ietf-httpapi-digest-fields-problem-types
    "ERR_DIGEST_MISMATCH": "digest-mismatched-values",
    "ERR_INVALID_DIGEST": "digest-invalid-values",
    "ERR_UNSUPPORTED_DIGEST": "digest-unsupported-algorithms",
}

#: Errors that are the target resource's own answer (the application refused the
#: upload), not the upload protocol's: from interop 9 they carry ``Upload-Complete: ?1``,
#: telling the client not to resume.
TARGET_ERRORS = frozenset({"ERR_UPLOAD_REJECTED"})

#: Draft request headers a browser may send (CORS) and response headers it may read.
ALLOWED_HEADERS = ("Upload-Complete", "Upload-Incomplete", "Upload-Draft-Interop-Version",
                   "Upload-Offset", "Upload-Length", "Content-Disposition", "Incremental",
                   "Content-Digest", "Repr-Digest")
EXPOSED_HEADERS = ("Upload-Complete", "Upload-Incomplete", "Upload-Draft-Interop-Version",
                   "Upload-Limit", "Upload-Offset", "Upload-Length", "Location")

_SF_INTEGER = re.compile(r"[0-9]{1,15}")

#: The tus download handler: ``(request, hook, upload_id) -> response``.
Download = Callable[[Request, Optional[RequestInfo], str], Response]


#: Request headers only tus defines: a request carrying one is tus even without
#: ``Tus-Resumable`` (and then refused with 412, as tus requires).
TUS_ONLY_HEADERS = ("Upload-Defer-Length", "Upload-Concat", "Upload-Checksum")
#: Methods a client of the final RFC sends to an upload with no version header.
UPLOAD_METHODS = ("HEAD", "PATCH", "DELETE", "GET")


def interop_version(request: Request, method: Optional[str] = None) -> Optional[int]:
    """The draft version a request speaks, ``None`` for tus; the rules, in order:

    ``Tus-Resumable`` means tus; ``Upload-Draft-Interop-Version`` names the draft
    (400 for one this server does not implement); ``Upload-Complete``,
    ``Upload-Incomplete`` or ``Content-Type: application/partial-upload`` mean the
    latest draft; a header only tus defines (or tus's PATCH media type) means tus;
    any other ``HEAD``, ``PATCH``, ``DELETE`` or ``GET`` of an upload is the latest
    draft, which is what a client of the final RFC sends (the interop header
    exists only while the draft is a draft).  What is left (a ``POST`` naming no
    protocol) is tus, which answers 412.
    """
    headers = request.headers
    if "Tus-Resumable" in headers:
        return None
    raw = headers.get("Upload-Draft-Interop-Version")
    if raw is not None:
        raw = raw.strip()
        if _SF_INTEGER.fullmatch(raw) and int(raw) in SUPPORTED_VERSIONS:
            return int(raw)
        raise TusError("ERR_UNSUPPORTED_INTEROP_VERSION",
                       f"got {raw[:20]!r}; supported {SUPPORTED_VERSIONS[0]} to {LATEST_VERSION}",
                       headers=[("Upload-Draft-Interop-Version", str(LATEST_VERSION))])
    if "Upload-Complete" in headers or "Upload-Incomplete" in headers \
            or request.mimetype == PARTIAL_UPLOAD_TYPE:
        return LATEST_VERSION
    if request.mimetype == PATCH_CONTENT_TYPE or any(name in headers for name in TUS_ONLY_HEADERS):
        return None
    return LATEST_VERSION if (method or request.method) in UPLOAD_METHODS else None


def names_version(request: Request) -> bool:
    """Whether the request named its interop version (else it is a final-RFC client's,
    or one with only the draft's completion header)."""
    return "Upload-Draft-Interop-Version" in request.headers


def parse_sf_boolean(value: str) -> bool:
    item = value.split(";", 1)[0].strip()  # structured-field parameters are ignored
    if item == "?1":
        return True
    if item == "?0":
        return False
    raise TusError("ERR_INVALID_UPLOAD_COMPLETE", f"got {value[:20]!r}, expected ?1 or ?0")


def parse_sf_integer(value: Optional[str], error_code: str) -> Optional[int]:
    if value is None:
        return None
    item = value.split(";", 1)[0].strip()
    if not _SF_INTEGER.fullmatch(item):
        raise TusError(error_code, f"got {value[:40]!r}")
    return int(item)


class IetfHandlers:
    """One handler per method; ``version`` is the request's interop version."""

    def __init__(self, service: UploadService, download: Optional[Download] = None) -> None:
        self.service = service
        self.config = service.config
        self._download = download

    # -- helpers: the draft's headers --------------------------------------------
    def upload_limit(self, version: int, info: Optional[UploadInfo] = None) -> str:
        """``Upload-Limit``: our size limits and the time left before expiry."""
        items = ["min-size=0"]
        if self.config.max_size:
            items.append(f"max-size={self.config.max_size}")
        if self.config.max_append_size:
            items.append(f"max-append-size={self.config.max_append_size}")
        if self.config.expiration:
            expires = info.expires if info is not None and info.expires else \
                time.time() + self.config.expiration
            items.append(f"{'expires' if version == 6 else 'max-age'}="
                         f"{max(0, int(expires - time.time()))}")
        return ", ".join(items)

    @staticmethod
    def _complete_header(version: int, complete: bool) -> tuple[str, str]:
        if version == 3:
            return "Upload-Incomplete", "?0" if complete else "?1"
        return "Upload-Complete", "?1" if complete else "?0"

    @staticmethod
    def _request_complete(request: Request, version: int, *, required: bool) -> bool:
        """Whether the request's body ends the upload."""
        name = "Upload-Incomplete" if version == 3 else "Upload-Complete"
        value = request.headers.get(name)
        if value is None:
            if required:
                raise TusError("ERR_INVALID_UPLOAD_COMPLETE", f"{name} is missing")
            return True  # interop 3-6: an append without the header is the last part
        flag = parse_sf_boolean(value)
        return not flag if version == 3 else flag

    def _state_headers(self, version: int, info: UploadInfo) -> list[tuple[str, str]]:
        headers = [("Upload-Offset", str(info.offset)),
                   self._complete_header(version, info.is_complete),
                   ("Upload-Limit", self.upload_limit(version, info)),
                   ("Upload-Draft-Interop-Version", str(version))]
        if info.length is not None:
            headers.append(("Upload-Length", str(info.length)))
        return headers

    @staticmethod
    def _reject_upload_headers(request: Request, version: int, what: str) -> None:
        """Interop 3-6: offset retrieval and cancellation carry no upload headers."""
        if version > 6:
            return
        for name in ("Upload-Offset", "Upload-Complete", "Upload-Incomplete", "Upload-Length"):
            if name in request.headers:
                raise TusError("ERR_UNEXPECTED_HEADER", f"{name} on {what}")

    # -- OPTIONS -----------------------------------------------------------------
    def discovery_headers(self) -> list[tuple[str, str]]:
        return [("Upload-Limit", self.upload_limit(LATEST_VERSION)),
                ("Accept-Patch", PARTIAL_UPLOAD_TYPE)]

    # -- creation ----------------------------------------------------------------
    def post(self, request: Request, hook: Optional[RequestInfo], version: int,
             upload_id: Optional[str] = None) -> Response:
        complete = self._request_complete(request, version, required=True)
        length = parse_sf_integer(request.headers.get("Upload-Length"), "ERR_INVALID_LENGTH")
        body = request_body(request, self.config.network_timeout)
        if complete and body is not None and body.length is not None and length is not None \
                and body.length != length:
            raise TusError("ERR_INCONSISTENT_LENGTH",
                           f"Upload-Length {length}, body of {body.length} bytes")
        if complete and body is None:
            length = 0 if length is None else length
        outcome = self.service.create(
            UploadRequest(body=body, length=length, complete=complete,
                          checksums=self._digests(request, whole=complete),
                          metadata=self._metadata(request), hook=hook),
            on_created=lambda info: self._send_104(request, version, info))
        response = Response(status=201, headers=self._state_headers(version, outcome.info))
        response.headers["Location"] = upload_url(request, self.config.base_path, outcome.info.id)
        response.headers.extend(outcome.headers.items())
        return response

    @staticmethod
    def _digests(request: Request, *, whole: bool) -> tuple[Checksum, ...]:
        """What the body must hash to: ``Content-Digest`` (this request's content),
        and ``Repr-Digest`` when the content is the whole representation (it starts
        at offset 0 and completes the upload); otherwise ``Repr-Digest`` describes
        bytes this request does not carry, and is only checked for form."""
        checksums: list[Checksum] = []
        for field in ("Content-Digest", "Repr-Digest"):
            value = request.headers.get(field)
            if value is None:
                continue
            digests = parse_digests(field, value)
            if field == "Content-Digest" or whole:
                checksums += [Checksum(name, digest, "ERR_DIGEST_MISMATCH") for name, digest in digests]
        return tuple(checksums)

    def _metadata(self, request: Request) -> list[tuple[str, Optional[str]]]:
        """tus-style ``Upload-Metadata`` (tus-js-client sends it) plus the draft's
        representation metadata: ``Content-Type`` → ``filetype``,
        ``Content-Disposition`` filename → ``filename``."""
        metadata = parse_metadata(request.headers.get("Upload-Metadata"),
                                  self.config.max_metadata_size)
        known = {key for key, _ in metadata}
        extra = {}
        mimetype = request.mimetype
        if mimetype and mimetype != PARTIAL_UPLOAD_TYPE and is_media_type(mimetype):
            extra["filetype"] = mimetype
        filename = _disposition_filename(request.headers.get("Content-Disposition"))
        if filename:
            extra["filename"] = filename
        return metadata + [pair for pair in encode_metadata(extra) if pair[0] not in known]

    def _send_104(self, request: Request, version: int, info: UploadInfo) -> None:
        """104 Upload Resumption Supported, before the body is read, so a client cut
        mid-body still learns the upload URL.  WSGI has no interim responses: this
        needs tuswsgi's worker, and a request that named a supported interop version."""
        if "Upload-Draft-Interop-Version" not in request.headers:
            return
        location = upload_url(request, self.config.base_path, info.id)
        lines = ["HTTP/1.1 104 Upload Resumption Supported", f"Location: {location}",
                 f"Upload-Draft-Interop-Version: {version}",
                 f"Upload-Limit: {self.upload_limit(version, info)}"]
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            return  # the final response reports what happens to the body
        send_interim(request, head)

    # -- offset retrieval ----------------------------------------------------------
    def head(self, request: Request, hook: Optional[RequestInfo], version: int,
             upload_id: str) -> Response:
        self._reject_upload_headers(request, version, "offset retrieval")
        info = self.service.head(upload_id, UploadRequest(hook=hook))
        response = Response(status=204, headers=self._state_headers(version, info))
        response.headers["Cache-Control"] = "no-store"
        return response

    def get(self, request: Request, hook: Optional[RequestInfo], version: int,
            upload_id: str) -> Response:
        """Offset retrieval, as the drafts from interop 8 allow; a GET that names no
        version is also what a browser sends for a download link, so a finished
        upload is downloaded (the draft leaves a GET's content undefined), with the
        offset retrieval's headers, and any other is answered like ``HEAD``."""
        if names_version(request) or self._download is None or not self.config.download:
            return self.head(request, hook, version, upload_id)
        info = self.service.get(upload_id)
        if not info.is_complete:
            return self.head(request, hook, version, upload_id)
        response = self._download(request, hook, upload_id)
        if 200 <= response.status_code < 300:
            response.headers.extend(self._state_headers(version, info))
        return response

    # -- append ----------------------------------------------------------------------
    def patch(self, request: Request, hook: Optional[RequestInfo], version: int,
              upload_id: str) -> Response:
        if version >= 6 and request.mimetype != PARTIAL_UPLOAD_TYPE:
            raise TusError("ERR_INVALID_PARTIAL_UPLOAD_TYPE")
        offset = parse_sf_integer(request.headers.get("Upload-Offset"), "ERR_INVALID_OFFSET")
        if offset is None:
            raise TusError("ERR_INVALID_OFFSET", "header is missing")
        complete = self._request_complete(request, version, required=version >= 7)
        length = parse_sf_integer(request.headers.get("Upload-Length"), "ERR_INVALID_LENGTH")
        checksums = self._digests(request, whole=complete and offset == 0)
        body = request_body(request, self.config.network_timeout)
        current = self.service.get(upload_id)
        if current.is_complete and current.finished:
            if version >= 9:
                return self._append_to_finished(current, offset, body)
            return self._append_to_completed(version, current, offset, body)
        try:
            outcome = self.service.append(upload_id, UploadRequest(
                body=body, offset=offset, length=length, complete=complete,
                checksums=checksums, hook=hook))
        except TusError as error:
            if version >= 9 and error.error_code == "ERR_SIZE_EXCEEDED":
                # "marking the upload resource invalid and rejecting any further
                # interaction with it": from now on it answers as a cancelled one.
                self.service.invalidate(upload_id)
            raise
        info = outcome.info
        # interop 3-6 answer appends with 201; from 7 a completing append gets the
        # target's own answer (200) and an incomplete one 204
        status = (200 if info.is_complete else 204) if version >= 7 else 201
        response = Response(status=status, headers=self._state_headers(version, info))
        response.headers.extend(outcome.headers.items())
        return response

    def _append_to_completed(self, version: int, info: UploadInfo, offset: int,
                             body: Optional[RequestBody]) -> Response:
        """A client that lost the final response may repeat an empty completing
        append (tus-js-client does when HEAD gave no length): it gets the state.
        Anything else would change a finished upload and is refused."""
        if body is None and offset == info.offset:
            return Response(status=200 if version >= 7 else 201,
                            headers=self._state_headers(version, info))
        raise TusError("ERR_UPLOAD_COMPLETED", f"upload finished at {info.offset} bytes")

    def _append_to_finished(self, info: UploadInfo, offset: int,
                            body: Optional[RequestBody]) -> Response:
        """Interop 9 has no completed-upload problem: the offset rule holds as for any
        append (409), an empty append at the end gets the final response again (the
        client lost it), and more bytes are refused like any invalid append."""
        if offset != info.offset:
            raise TusError("ERR_MISMATCHED_OFFSET", f"upload is at {info.offset}",
                           expected_offset=info.offset, provided_offset=offset)
        if body is not None:
            raise TusError("ERR_UPLOAD_COMPLETED", f"upload finished at {info.offset} bytes")
        return Response(status=200, headers=self._state_headers(9, info))

    # -- cancellation ------------------------------------------------------------------
    def delete(self, request: Request, hook: Optional[RequestInfo], version: int,
               upload_id: str) -> Response:
        self._reject_upload_headers(request, version, "cancellation")
        self.service.terminate(upload_id, UploadRequest(hook=hook))
        return Response(status=204)

    # -- errors --------------------------------------------------------------------------
    def error_response(self, error: TusError, version: int, upload_id: Optional[str],
                       method: str) -> Response:
        """The error as ``application/problem+json``, with the draft's headers."""
        status = 400 if error.error_code == "ERR_SIZE_EXCEEDED" else error.code  # the draft's
        problem: dict = {"type": "about:blank", "title": error.description,
                         "status": status, "code": error.error_code}
        headers = [("Upload-Draft-Interop-Version", str(version))]
        kind = PROBLEM_TYPES.get(error.error_code)
        if kind and not (version >= 9 and kind == "completed-upload"):
            problem["type"] = PROBLEM_TYPE + kind
        if error.error_code == "ERR_MISMATCHED_OFFSET" and upload_id is not None:
            info = self._current(upload_id)
            if info is not None:
                problem["expected-offset"] = info.offset
                problem["provided-offset"] = error.provided_offset
                headers.append(("Upload-Offset", str(info.offset)))
                if version < 9:  # from 9 the completion header says who answered, below
                    headers.append(self._complete_header(version, info.is_complete))
        if status == 413:
            headers.append(("Upload-Limit", self.upload_limit(version)))
        completion = self._error_completion(error, version, method)
        if error.body is not None:  # a hook chose the answer
            response = error.get_response()
            response.headers.extend(completion)
            return response
        headers += [(k, v) for k, v in error.extra_headers if k.lower() != "content-type"]
        return Response(json.dumps(problem), status=status, headers=headers + completion,
                        content_type="application/problem+json")

    def _current(self, upload_id: str) -> Optional[UploadInfo]:
        try:
            return self.service.get(upload_id)
        except TusError:
            return None

    def _error_completion(self, error: TusError, version: int, method: str) -> list:
        """Interop 9: an error answering a creation or an append says whether it is the
        target resource's answer (``?1``: do not resume) or the protocol's (``?0``)."""
        if version < 9 or method not in ("POST", "PATCH"):
            return []
        return [self._complete_header(version, error.error_code in TARGET_ERRORS)]


def _disposition_filename(value: Optional[str]) -> Optional[str]:
    """The file name in a ``Content-Disposition`` header (``filename*`` preferred)."""
    if not value:
        return None
    message = Message()
    message["Content-Disposition"] = value
    name = message.get_filename()
    return name[:255] if name else None
