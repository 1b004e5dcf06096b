"""The response class: werkzeug's, without a default Content-Type.

Most tus responses (201, 204, HEAD) have no body; labelling them text/plain
would be wrong.  Responses with a body set their type explicitly.
"""

from werkzeug.wrappers import Response as _WerkzeugResponse


class Response(_WerkzeugResponse):
    default_mimetype = None
