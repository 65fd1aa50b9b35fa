"""The secrets guard: API keys and tokens of the common providers, private keys and JWTs.

Formats, from each provider's documentation of its key prefixes: OpenAI (``sk-``,
``sk-proj-``, ``sk-svcacct-``, ``sk-admin-``), Anthropic (``sk-ant-``), AWS access key ids
(``AKIA``/``ASIA``… and 16 characters) and secret keys given as ``aws_secret_access_key``,
GitHub (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``), Slack (``xox?-``
tokens and incoming-webhook URLs), PEM private keys (RFC 7468 ``-----BEGIN … PRIVATE
KEY-----``; a key without its END line is matched to the end of the text, or to
``PEM_BODY_CHARS`` past its header, whichever comes first) and JSON Web
Tokens (RFC 7519: three base64url parts, the first two JSON objects, so ``eyJ``).
"""

from __future__ import annotations

import re

from service.guards.base import Finding, placeholder, tail_run
from service.guards.normalize import Normalized

PEM_BODY_CHARS = 16384
"""The longest PEM body matched (an RSA-16384 private key is about 12.6 KB in PEM). Bounded
so that a header without its END line costs one bounded scan, not a scan to the end of the
text per header, and a stream does not hold (and rescan) everything after it."""

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            rf"(?:[\s\S]{{0,{PEM_BODY_CHARS}}}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            rf"|[\s\S]{{0,{PEM_BODY_CHARS}}})"
        ),
    ),
    ("anthropic_key", re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}")),
    (
        "openai_key",
        re.compile(r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ),
    ("aws_access_key", re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    (
        "aws_secret_key",
        re.compile(
            r"(?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
        ),
    ),
    (
        "github_token",
        re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    ),
    (
        "slack_token",
        re.compile(
            r"xox[abposr]-[A-Za-z0-9-]{10,250}"
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{10,200}"
        ),
    ),
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
)
CATEGORIES = tuple(name for name, _ in _PATTERNS)
_WORD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
# Per category: literals one of which a match must contain (a cheap test before the
# pattern runs), and what may not precede a match (checked on it: a leading lookbehind would
# make re try every position on its slow path).
_GATES: dict[str, tuple[tuple[str, ...], str]] = {
    "private_key": (("PRIVATE KEY",), ""),
    "anthropic_key": (("sk-ant-",), _WORD + "-"),
    "openai_key": (("sk-",), _WORD + "-"),
    "aws_access_key": (("AKIA", "ASIA", "ABIA", "ACCA"), _WORD),
    "aws_secret_key": (("aws_secret_access_key",), ""),
    "github_token": (("gh", "github_pat_"), _WORD),
    "slack_token": (("xox", "hooks.slack.com"), _WORD),
    "jwt": (("eyJ",), _WORD + "-"),
}
_TAIL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./+=:'\""
_NOT_FIRST = "./+=:'\""
_WINDOW = 300
_PEM_HEADER = "-----BEGIN "
_HEADER_WINDOW = 64  # "-----BEGIN ENCRYPTED PRIVATE KEY-----" and its kin fit


class SecretsMatcher:
    """See the module docstring."""

    window = _WINDOW

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        found: list[Finding] = []
        s = text.text
        lowered = ""
        for category, pattern in _PATTERNS:
            literals, not_after = _GATES[category]
            if category == "aws_secret_key":
                lowered = lowered or s.lower()
                if literals[0] not in lowered:
                    continue
            elif not any(literal in s for literal in literals):
                continue
            for match in pattern.finditer(s):
                start, end = match.span()
                if start and s[start - 1] in not_after:
                    continue
                if not any(f.start < end and start < f.end for f in found):
                    found.append(Finding(start, end, category, placeholder(category)))
        return found

    def hold(self, text: str) -> int:
        held = tail_run(text, _TAIL, _WINDOW, _NOT_FIRST)
        # A PEM header in progress has spaces in it: hold from its first dash.
        header = text.rfind("-----", max(0, len(text) - _HEADER_WINDOW))
        if header >= 0 and "PRIVATE KEY-----" not in text[header:]:
            while header > 0 and text[header - 1] == "-":
                header -= 1
            held = max(held, len(text) - header)
        return min(held, max(_WINDOW, _HEADER_WINDOW))
