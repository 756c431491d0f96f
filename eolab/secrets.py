"""Redaction of credentials in URLs and messages: the one function everything printed or written goes through.

A storage URL may carry a password in several forms, and database drivers quote the URL, or parts
of it, in their error messages. `redact` replaces the secret part of every form with ``***``:

1. userinfo: ``scheme://user:pw@host/db`` -> ``scheme://user:***@host/db``;
2. userinfo whose password holds unencoded ``@``, ``:``, ``/``, ``?`` or ``#``
   (``scheme://user:p@ss:w/rd@host``): everything up to the last ``@`` before the host is userinfo;
3. percent-encoded passwords (``p%40ss``), and their decoded form wherever a driver shows it;
4. query and DSN parameters: ``?user=u&password=pw``, ``host=h password=pw``, ``"password": "pw"``,
   for the keys in `SECRET_KEYS` (password, passwd, pwd, pass, secret, token, key, api_key, ...);
5. malformed URLs without ``://`` (``postgresql//user:pw@host``, ``postgresql:/user:pw@host``,
   ``user:pw@host``): any ``name:secret@host`` is treated as userinfo;
6. the literal secrets of a known URL (`url_secrets`): as written, percent-decoded and
   percent-encoded, and the pieces a parser splits an unencoded password into (``p@ss`` parsed as
   password ``p``, host ``ss@host``), scrubbed from any text, however a driver reformats it.

This module imports nothing of eolab, so the orchestration, the trial client and the data layer
can all use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

MASK = "***"

SECRET_KEYS = (
    "password", "passwd", "pwd", "pass", "secret", "client_secret", "token", "access_token", "auth_token",
    "key", "api_key", "apikey", "access_key", "secret_key", "private_key", "sslpassword", "credentials",
)
"""Parameter names (case-insensitive, also with a prefix such as ``db_password``) whose value is a secret."""

MIN_SECRET_LENGTH = 3
"""Shorter literal pieces are not scrubbed from free text (they would mangle ordinary words)."""

FORMS = (
    "userinfo user:pw@host",
    "userinfo with unencoded @ : / ? # in the password",
    "percent-encoded password (and its decoded form)",
    "query parameter (?password=, &token=, ...)",
    "DSN / keyword parameter (password=pw, 'password': 'pw')",
    "malformed URL without :// (scheme//user:pw@host, scheme:/user:pw@host, user:pw@host)",
    "literal secrets of a known URL (written, decoded, encoded, parser-split pieces)",
)
"""The URL and message forms `redact` covers (the tests feed each through the command line)."""

_KEYS = "|".join(sorted((re.escape(k) for k in SECRET_KEYS), key=len, reverse=True))
# key=value in queries and DSNs: the value runs to the next separator (& ; whitespace or quote),
# punctuation that ends a sentence ("...password=pw: cannot connect") left out.
_PREFIX = r"(?:[A-Za-z0-9]+[_.-])?"  # db_password, PGPASSWORD-style names need the separator: not "monkey"
_PARAM_RE = re.compile(
    rf"(?P<key>\b{_PREFIX}(?:{_KEYS}))(?P<sep>\s*=\s*['\"]?)(?P<value>(?!\*\*\*)[^&;\s'\"]+?)(?=[:,.)\]]*(?:[&;\s'\"]|$))", re.IGNORECASE
)
# 'password': 'value' / "password": "value" (dict reprs and JSON).
_QUOTED_RE = re.compile(
    rf"(?P<key>['\"]{_PREFIX}(?:{_KEYS})['\"]\s*:\s*)(?P<q>['\"])(?P<value>(?:(?!(?P=q)).)*)(?P=q)", re.IGNORECASE
)
# A URL-ish token: scheme://rest, or anything with name:secret@host. Tokens end at whitespace/quotes.
_TOKEN_RE = re.compile(r"[^\s'\"`<>]+")
_SCHEME_RE = re.compile(r"^[^A-Za-z]*(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*(?::/{0,3}|/{2,3}))")
_LEAD_RE = re.compile(r"^[^A-Za-z0-9]*")


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential replaced by ``***``: the forms listed in `FORMS`, plus `secrets`."""
    text = _QUOTED_RE.sub(lambda m: f"{m['key']}{m['q']}{MASK}{m['q']}", str(text))
    text = _TOKEN_RE.sub(lambda m: _redact_token(m[0]), text)
    text = _PARAM_RE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    for secret in sorted(set(_variants(secrets)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def url_secrets(url: str) -> list[str]:
    """The secrets of one URL (its password and secret parameters), to scrub from messages that
    quote them in any other shape."""
    secrets = []
    for token in _TOKEN_RE.findall(str(url)):
        userinfo, _, query = _parts(token)
        if userinfo is not None and ":" in userinfo:
            secrets.append(userinfo.split(":", 1)[1])
        if query:
            secrets += [v for k, v in parse_qsl(query, keep_blank_values=False) if _is_secret_key(k)]
            secrets += [m["value"] for m in _PARAM_RE.finditer(query)]
    return sorted({s for s in secrets if s and s != MASK})


def _variants(secrets: Iterable[str]) -> Iterable[str]:
    """Each secret as written, decoded, encoded, and split where a URL parser would split it."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}:
            if len(form) >= MIN_SECRET_LENGTH:
                yield form
            for piece in re.split(r"[@:/?#&;=\s]+", form):
                if len(piece) >= MIN_SECRET_LENGTH:
                    yield piece


def _is_secret_key(key: str) -> bool:
    return re.fullmatch(rf"{_PREFIX}(?:{_KEYS})", key, re.IGNORECASE) is not None


def _parts(token: str) -> tuple[str | None, int, str]:
    """(userinfo or None, index where the userinfo starts, the query string) of a URL-ish token.

    With a scheme (``x://``, ``x:/``, ``x//``) the userinfo runs from after it to the last ``@``
    before the query; without one, a token holds userinfo only as ``name:secret@host``.
    """
    scheme = _SCHEME_RE.match(token)
    if scheme and scheme["scheme"].endswith(":") and ":" not in token[scheme.end():].split("@", 1)[0]:
        scheme = None  # user:pw@host: the "scheme" was the user name
    start = scheme.end() if scheme else _LEAD_RE.match(token).end()
    rest = token[start:]
    query = rest.split("?", 1)[1] if "?" in rest else ""
    stop = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, stop)
    if at < 0:
        # An '@' only after '?'/'#': userinfo whose password holds '?' or '#', unless it is a query value.
        at = rest.rfind("@")
        if at < 0 or "=" in rest[:at] or ":" not in rest[:at]:
            return None, start, query
        query = ""
    userinfo = rest[:at]
    if "/" in userinfo.split(":", 1)[0]:  # a (malformed) path before the userinfo: x:/a/user:pw@host
        cut = userinfo.split(":", 1)[0].rfind("/") + 1
        start, userinfo = start + cut, userinfo[cut:]
    if ":" not in userinfo:
        return None, start, query
    return userinfo, start, query


def _redact_token(token: str) -> str:
    """One token with its userinfo password and its secret query values masked."""
    userinfo, start, _ = _parts(token)
    if userinfo is not None and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        if userinfo.split(":", 1)[1] != MASK:
            token = f"{token[:start]}{user}:{MASK}{token[start + len(userinfo):]}"
    return token


STORAGE_ENV = "EOLAB_STUDY_STORAGE"
"""Environment variable holding a study's storage URL (expanded: it may carry the password) for
its workers and kernels; `known_secrets` scrubs its secrets from whatever a process writes."""


def known_secrets() -> list[str]:
    """The secrets this process knows of: those of the storage URL in its environment."""
    return url_secrets(os.environ.get(STORAGE_ENV, ""))


def redact_values(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A JSON-able object with every string value (not the keys) redacted, for files written."""
    secrets = known_secrets() if secrets is None else list(secrets)
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact_values(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_values(v, secrets) for v in obj]
    return obj


def install_redacting_excepthook() -> None:
    """Print an uncaught exception's traceback with every credential in it redacted (the command
    line and study workers, whose logs lie in the results folder)."""
    import sys

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        import traceback

        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb)), known_secrets()))

    sys.excepthook = hook
