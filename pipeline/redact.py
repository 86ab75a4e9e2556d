"""Keep secrets in source and store URLs out of logs, events, metrics and error messages.

Cameras are usually addressed as rtsp://user:password@host/...; some vendors put tokens in the query
string instead. Everything the pipeline prints about a source goes through `redact_url` (one URL) or
`redact_text` (free text such as a decoder's error message, which may quote the URL).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry credentials in camera and service URLs.
SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key",
                           "apikey", "api_key", "secret", "signature", "sig", "credentials"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL with its password (and secret query parameters) replaced by ***; other text unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        password, host, port = parts.password, parts.hostname, parts.port
    except ValueError:
        # Unparseable netloc (e.g. a bad port): hide everything before '@' rather than risk a leak.
        return re.sub(r"://[^/@]*@", f"://{MASK}@", url)
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{host or ''}" + (f":{port}" if port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """Redact every URL found inside free text (decoder errors, exception messages)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
