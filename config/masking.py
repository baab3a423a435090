"""Masking secrets for printing: the one helper every message, log line and listing uses.

A URL keeps its scheme, user, host, port and path; its password becomes ``***``
(``postgresql+psycopg://app:***@db:5432/orch``). Masking never parses strictly: a
malformed URL (a raw ``/`` or ``@`` in the password) is masked as generously as the
password could reach, so a value that fails validation is still safe to show.
"""

from __future__ import annotations

import re

MASK = "***"

# A URL in free text runs from its scheme to the next blank (a password may hold quotes
# or brackets, and a closing one kept after the host does no harm); a run holding several
# (a comma-separated list) is cut before each further "scheme://".
_URL_RUN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_NEXT_URL = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.\-]*://)")


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``, fit for printing.

    ``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``; a URL without a
    password is returned unchanged. Everything between the user name's ``:`` and the
    last ``@`` counts as password, so nothing of a malformed one shows either.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}{sep}{user}:{MASK}@{host}"


def mask_text(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with every URL's password masked (see :func:`mask_url`) and each of
    ``secrets`` (API keys, passwords) replaced by ``***`` wherever it appears."""

    def _mask(match: re.Match[str]) -> str:
        return ",".join(mask_url(url) for url in _NEXT_URL.split(match.group(0)))

    masked = _URL_RUN.sub(_mask, text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked
