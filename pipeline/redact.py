"""Keep secrets in source and store URLs out of logs, events, metrics and error messages.

One function, `redact`, for any text that may hold a URL: a camera source, a store URL, a decoder's or a
client library's error message quoting one. Every URL-like part (`scheme://…`, any scheme, any case) is
cleaned of
* its userinfo's secret: `user:password@` keeps the user name (`user:***@`); userinfo without a colon is
  all secret (`rtsp://TOKEN@host` -> `rtsp://***@host`). Passwords often hold reserved characters left
  unencoded (`/`, `@`, `#`, `?`), so the userinfo runs to the *last* `@` that is followed by a host, not to
  the first `/` as RFC 3986 would have it: a wrong guess hides too much, never too little;
* the values of secret query or fragment parameters (`password=`, `token=`, `passphrase=`, `api_key=`,
  `X-Amz-Signature=`… any key naming a password, pass phrase, token, key, secret, signature, credential,
  auth or session), masked first, since a value may hold an '@'.
Everything else is kept as it was, so a redacted message still says which camera or host it is about.
"""

from __future__ import annotations

import re

MASK = "***"
# A URL-like token: a scheme, "://", then everything up to white space or a quote (quotes and brackets
# around a URL in a message are not part of it).
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*)://([^\s'\"<>`]*)")
# The host (and port) that must follow the userinfo's "@": a name, an IPv4 or a bracketed IPv6 address.
_HOST_AFTER_AT = re.compile(r"(?:\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9._~\-]+)(?::\d*)?(?=[/?#;,)\]]|$|:|\s)")
# Secret parameter names: any key containing one of these words.
_SECRET_KEY = re.compile(r"(?i)(pass|pwd|token|secret|key|sig|cred|auth|session|cookie|bearer)")
# A value runs to the next delimiter that starts another `key=` parameter: an unencoded '?', '#' or '&' inside
# a value (or a password) must neither end the secret early nor hide the parameter that follows it.
_PARAM = re.compile(r"([?&;#])([^=&;#?]*)=((?:[^&;#?]|[&;#?](?![^=&;#?]*=))*)")


def _userinfo_end(rest: str) -> int:
    """Index of the '@' that ends the userinfo in `rest` (what follows '://'), or -1 when there is none:
    the last '@' followed by something that looks like a host."""
    at = rest.rfind("@")
    while at >= 0:
        if _HOST_AFTER_AT.match(rest, at + 1):
            return at
        at = rest.rfind("@", 0, at)
    return -1


def _redact_params(part: str) -> str:
    return _PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if _SECRET_KEY.search(m.group(2)) and m.group(3)
                      else m.group(0), part)


def _redact_match(m: re.Match) -> str:
    scheme, rest = m.group(1), m.group(2)
    # Secret parameters first: a value may hold an '@' that would otherwise pass for the userinfo's end.
    start = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if start >= 0:
        rest = rest[:start] + _redact_params(rest[start:])
    at = _userinfo_end(rest)
    if at >= 0:
        userinfo, rest = rest[:at], rest[at:]  # rest keeps the '@'
        user, colon, _ = userinfo.partition(":")
        # `user:secret@` keeps the user; a userinfo without a colon (a token) is all secret
        userinfo = f"{user}:{MASK}" if colon and not re.search(r"[/?#]", user) else MASK
        rest = userinfo + rest
    return f"{scheme}://{rest}"


def redact(text: str) -> str:
    """`text` with every URL's password, token userinfo and secret parameters replaced by ***."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)

