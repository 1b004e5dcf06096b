"""The upload events hooks are told about (tusd's names), declared once.

Apart from :mod:`tuswsgi.hooks` so the settings table can check
``hooks_enabled`` without importing the hook machinery.
"""

EVENTS = ("pre-access", "pre-create", "post-create", "post-receive", "pre-finish",
          "post-finish", "pre-terminate", "post-terminate")
#: Events whose answer the request waits for (and that can refuse it).
BLOCKING = frozenset({"pre-access", "pre-create", "pre-finish", "pre-terminate"})
