"""Every error a client can see, declared once: stable code, HTTP status, message.

Errors are werkzeug ``HTTPException`` instances, so a handler raises one and the
dispatcher returns it as the response.  The body is plain text that starts with
the machine-readable code (``ERR_MISMATCHED_OFFSET: ...``); the same code goes
to the log line, so an operator can grep for what a client was told.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from werkzeug.exceptions import HTTPException

from .responses import Response

ERRORS: dict[str, tuple[int, str]] = {
    # Request framing and protocol version.
    "ERR_UNSUPPORTED_VERSION": (412, "Tus-Resumable is missing or names an unsupported version"),
    "ERR_BAD_REQUEST": (400, "the request is malformed"),
    "ERR_METHOD_NOT_ALLOWED": (405, "method not allowed on this resource"),
    "ERR_NOT_FOUND": (404, "upload not found"),
    "ERR_UPLOAD_GONE": (410, "upload was terminated or has expired"),
    # Header validation.
    "ERR_INVALID_OFFSET": (400, "Upload-Offset must be a non-negative decimal integer"),
    "ERR_INVALID_LENGTH": (400, "Upload-Length must be a non-negative decimal integer"),
    "ERR_INVALID_DEFER_LENGTH": (400, "Upload-Defer-Length must be 1"),
    "ERR_LENGTH_REQUIRED": (400, "send either Upload-Length or Upload-Defer-Length: 1"),
    "ERR_LENGTH_AND_DEFER": (400, "send Upload-Length or Upload-Defer-Length, not both"),
    "ERR_INVALID_CONTENT_LENGTH": (400, "Content-Length must be a non-negative decimal integer"),
    "ERR_INVALID_METADATA": (400, "Upload-Metadata is malformed"),
    "ERR_METADATA_TOO_LARGE": (400, "Upload-Metadata exceeds the configured size limit"),
    "ERR_INVALID_CONCAT": (400, "Upload-Concat is malformed or names unusable uploads"),
    "ERR_CONCAT_TOO_MANY_PARTS": (400, "a final upload names more partial uploads than the server accepts"),
    "ERR_CONCAT_REPEATED_PART": (400, "a final upload names the same partial upload more than once"),
    "ERR_INVALID_CHECKSUM": (400, "Upload-Checksum is malformed"),
    "ERR_UNSUPPORTED_CHECKSUM": (400, "checksum algorithm not supported"),
    "ERR_CHECKSUM_TWICE": (400, "send Upload-Checksum as a header or as a trailer, not both"),
    "ERR_TRAILER_NOT_ANNOUNCED": (400, "an Upload-Checksum trailer must be announced with "
                                       "Trailer: Upload-Checksum"),
    "ERR_TRAILER_MISSING": (400, "the announced Upload-Checksum trailer did not arrive "
                                 "(a proxy may have dropped it)"),
    "ERR_TRAILER_UNAVAILABLE": (400, "an Upload-Checksum trailer needs a chunked body and a "
                                     "server that passes trailers on"),
    "ERR_MALFORMED_DIGEST": (400, "Content-Digest or Repr-Digest is malformed"),
    "ERR_UNSUPPORTED_DIGEST": (400, "no digest algorithm this server verifies (sha-256, sha-512)"),
    "ERR_INVALID_DIGEST": (400, "a digest has the wrong length for its algorithm"),
    "ERR_INVALID_CONTENT_TYPE": (415, "Content-Type must be application/offset+octet-stream"),
    "ERR_INVALID_PARTIAL_UPLOAD_TYPE": (415, "Content-Type must be application/partial-upload"),
    "ERR_INVALID_METHOD_OVERRIDE": (400, "X-HTTP-Method-Override names an unsupported method"),
    # Upload state.
    "ERR_MISMATCHED_OFFSET": (409, "Upload-Offset does not match the upload's offset"),
    "ERR_LENGTH_ALREADY_SET": (400, "Upload-Length is already known and cannot change"),
    "ERR_LENGTH_TOO_SMALL": (400, "Upload-Length is smaller than the bytes already received"),
    "ERR_SIZE_EXCEEDED": (413, "request would make the upload larger than its declared length"),
    "ERR_MAX_SIZE_EXCEEDED": (413, "upload is larger than the server's maximum size"),
    "ERR_INCONSISTENT_LENGTH": (400, "the upload's length indicators disagree"),
    "ERR_APPEND_TOO_LARGE": (413, "request body is larger than the server accepts in one request"),
    "ERR_UPLOAD_COMPLETED": (400, "upload is already complete"),
    "ERR_UNSUPPORTED_INTEROP_VERSION": (400, "Upload-Draft-Interop-Version names an unsupported draft"),
    "ERR_INVALID_UPLOAD_COMPLETE": (400, "Upload-Complete (or Upload-Incomplete) is missing or malformed"),
    "ERR_UNEXPECTED_HEADER": (400, "this request must not carry upload headers"),
    "ERR_UPLOAD_IS_FINAL": (403, "a final upload of a concatenation cannot be modified"),
    "ERR_UPLOAD_NOT_FINISHED": (404, "upload is not finished; only finished uploads can be downloaded"),
    "ERR_RANGE_NOT_SATISFIABLE": (416, "Range lies outside the upload"),
    "ERR_DOWNLOAD_DISABLED": (405, "downloads are disabled on this server"),
    "ERR_CHECKSUM_MISMATCH": (460, "checksum of the received data does not match Upload-Checksum"),
    "ERR_DIGEST_MISMATCH": (400, "the received data does not match Content-Digest or Repr-Digest"),
    "ERR_UPLOAD_LOCKED": (423, "upload is in use by another request"),
    "ERR_UPLOAD_INTERRUPTED": (400, "request was interrupted by a newer request for this upload"),
    "ERR_SERVER_SHUTDOWN": (503, "server is shutting down; resume from the reported offset"),
    "ERR_SERVER_BUSY": (503, "server is at capacity; retry after the seconds in Retry-After"),
    "ERR_TOO_MANY_CREATIONS": (429, "this client created too many uploads this minute; retry after "
                                    "the seconds in Retry-After"),
    "ERR_TOO_MANY_UNFINISHED": (429, "this client holds too many unfinished uploads; finish or delete "
                                     "some first"),
    "ERR_REQUEST_TIMEOUT": (408, "no data arrived within the network timeout"),
    "ERR_BODY_TOO_SLOW": (408, "the request body arrived slower than the server's minimum rate"),
    "ERR_REQUEST_HEAD_TIMEOUT": (408, "the request head did not arrive in full within the head timeout"),
    "ERR_REQUEST_HEAD_TOO_LARGE": (431, "the request head is larger than the server accepts"),
    "ERR_CLIENT_GONE": (400, "request body ended before its declared length"),
    "ERR_MALFORMED_BODY": (400, "the chunked request body is malformed"),
    "ERR_INSUFFICIENT_STORAGE": (507, "not enough storage space to save the data"),
    "ERR_DISK_RESERVE": (507, "the disk is nearly full: new uploads are refused so that the uploads "
                              "already running can finish; try again later"),
    "ERR_STORAGE": (500, "the storage failed while saving the data"),
    "ERR_NOT_RECORDED": (503, "the data was stored but the upload's length could not be recorded; "
                              "resume from the reported offset"),
    "ERR_UPLOAD_STOPPED": (400, "upload was stopped by the server's application"),
    # Hooks.
    "ERR_ACCESS_DENIED": (403, "access to this upload was refused"),
    "ERR_UPLOAD_REJECTED": (400, "upload was rejected by the server's application"),
    "ERR_TERMINATION_REJECTED": (400, "termination was rejected by the server's application"),
    "ERR_HOOK_FAILED": (500, "a hook of the server's application failed"),
    "ERR_INTERNAL": (500, "internal server error"),
}

#: Registered status phrases for codes werkzeug does not know.
_EXTRA_STATUS_PHRASES = {460: "Checksum Mismatch"}


class TusError(HTTPException):
    """An error response with a stable code; ``detail`` adds request specifics.

    ``upload_id`` names the upload a refused creation request did create (its
    bytes are kept: the client is told where, with ``Location``);
    ``expected_offset`` and ``provided_offset`` describe an offset mismatch;
    ``offset`` is where the upload stands after a request that failed once it had
    stored bytes (the client resumes from there).
    """

    code: int

    def __init__(self, code: str, detail: Optional[str] = None,
                 headers: Optional[Iterable[tuple[str, str]]] = None, *,
                 status: Optional[int] = None, body: Optional[str] = None,
                 upload_id: Optional[str] = None, expected_offset: Optional[int] = None,
                 provided_offset: Optional[int] = None, offset: Optional[int] = None) -> None:
        default_status, message = ERRORS[code]
        super().__init__(description=f"{message} ({detail})" if detail else message)
        self.code = status or default_status
        self.error_code = code
        self.extra_headers = list(headers or ())
        self.body = body  # a hook's own text replaces the standard body
        self.upload_id = upload_id
        self.expected_offset = expected_offset
        self.provided_offset = provided_offset
        self.offset = offset

    @property
    def name(self) -> str:  # type: ignore[override]
        return _EXTRA_STATUS_PHRASES.get(self.code) or super().name

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        if self.body is not None:
            return self.body
        return f"{self.error_code}: {self.description}\n"

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        # The offset a client must resume from, so a 409 needs no HEAD after it.
        offset = [] if self.expected_offset is None else [("Upload-Offset", str(self.expected_offset))]
        if any(name.lower() == "content-type" for name, _ in self.extra_headers):
            return [*self.extra_headers, *offset]  # e.g. a hook's own JSON body
        return [("Content-Type", "text/plain; charset=utf-8"), *self.extra_headers, *offset]

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:  # type: ignore[override]
        status = f"{self.code} {self.name}"
        return Response(self.get_body(), status, self.get_headers())
