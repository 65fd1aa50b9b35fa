"""The PII guard: e-mail addresses, phone numbers, payment cards, IBANs, US social security
numbers and IP addresses.

Candidates are found with small regular expressions (written here, linear in practice: no
nested quantifiers over the same characters) and then confirmed by the library that knows
the rules, so a version number, a date or an order id is not taken for PII:

- phone numbers: Google's libphonenumber rules (``phonenumbers``): a number with a ``+`` is
  checked against its country's plan, one without against ``phone_regions``;
- payment cards: 13 to 19 digits (spaces or dashes between them) passing the Luhn checksum
  (``stdnum.luhn``, ISO/IEC 7812-1);
- IBANs: ISO 13616 country format and mod-97 checksum (``stdnum.iban``);
- US SSNs: ``stdnum.us.ssn`` (area, group and serial rules, the advertised numbers refused);
- IP addresses: the standard library's ``ipaddress``.

Presidio was not used: its analyzer loads a spaCy model (a download of hundreds of MB) even
when only pattern recognizers are wanted, and its checksums come from the same rules.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

from service.guards.base import Finding, placeholder, tail_run
from service.guards.normalize import Normalized

EMAIL = "email"
PHONE = "phone"
PAYMENT_CARD = "payment_card"
IBAN = "iban"
US_SSN = "us_ssn"
IP_ADDRESS = "ip_address"
CATEGORIES = (EMAIL, PHONE, PAYMENT_CARD, IBAN, US_SSN, IP_ADDRESS)

# No pattern starts with a lookbehind (it would make re try every position in Python's
# slow path): what may not precede a match is checked on the match (``_NOT_AFTER``).
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![\w-])")
_PHONE = re.compile(r"\+?\(?\d[\d ().-]{5,20}\d(?![\w-])")
_CARD = re.compile(r"\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)")
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}(?![\w-])")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\w)")
_IPV6 = re.compile(r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Phone numbers, cards, SSNs and IPv4 addresses are made of these characters only, and begin
# with a digit (or up to two of "+(" before it): they are looked for only inside the runs of
# them that begin with a digit and are long enough (one scan of the text, not one a shape).
# An IBAN begins two letters before such a run.
_NUMERIC_RUN = re.compile(r"\d[\d ().+-]*")
_SHORTEST = 7  # "1.2.3.4"; a phone number has 7 digits or more, a card 13, an SSN 9
_WORD = "_" + "".join(sorted(_EMAIL_LOCAL - set("._%+-")))
_NOT_AFTER = {
    _PHONE: _WORD + "+.-",
    _CARD: _WORD + "-",
    _IBAN: _WORD,
    _SSN: _WORD + "-",
    _IPV4: _WORD + ".",
    _IPV6: _WORD + ":",
}

# For each shape, the characters a match in progress at the end of a streamed text may
# contain, and those it cannot begin with: the held window is the longest such run.
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALNUM = _UPPER + _UPPER.lower() + "0123456789"
_TAILS = (
    (_ALNUM + "._%+-@", ".@"),  # e-mail address
    ("0123456789 +().-", " ).-"),  # phone, card, SSN, IPv4
    (_UPPER + "0123456789 ", " 0123456789"),  # IBAN (upper case, as printed)
    ("0123456789abcdefABCDEF:", ""),  # IPv6
)
_WINDOW = 254  # the longest address RFC 5321 allows


class PiiMatcher:
    """See the module docstring. ``categories``: which kinds to look for."""

    window = _WINDOW

    def __init__(self, categories: Iterable[str], phone_regions: Iterable[str]) -> None:
        self._regions = tuple(r.upper() for r in phone_regions)
        wanted = set(categories)
        self._email = EMAIL in wanted
        self._iban = IBAN in wanted
        self._ipv6 = IP_ADDRESS in wanted
        numeric: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
            (PAYMENT_CARD, _CARD, _is_card),
            (US_SSN, _SSN, ssn.is_valid),
            (IP_ADDRESS, _IPV4, _is_ip),
            (PHONE, _PHONE, self._is_phone),
        ]
        self._numeric = tuple(c for c in numeric if c[0] in wanted)

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        s = text.text
        found = _emails(s) if self._email else []
        if not _has_digit(s):
            return found
        runs = [run.span() for run in _NUMERIC_RUN.finditer(s)]
        if self._iban:
            for start, _ in runs:
                if start >= 2 and s[start - 2 : start].isupper():
                    match = _IBAN.match(s, start - 2)
                    if match is not None:
                        _confirm(found, s, match, IBAN, _is_iban)
        if self._ipv6 and s.count(":") >= 2:
            for match in _IPV6.finditer(s):
                _confirm(found, s, match, IP_ADDRESS, _is_ipv6)
        windows = [(max(0, a - 2), b + 1) for a, b in runs if b - a >= _SHORTEST]
        for category, pattern, valid in self._numeric:
            for pos, endpos in windows:
                if not _may_hold(pattern, s, pos, endpos):
                    continue
                # endpos takes in the character after the run (never part of a match), so
                # the patterns' lookaheads see what follows as in the whole text.
                for match in pattern.finditer(s, pos, endpos):
                    _confirm(found, s, match, category, valid)
        return found

    def hold(self, text: str) -> int:
        return max(tail_run(text, chars, _WINDOW, starts) for chars, starts in _TAILS)

    def _is_phone(self, candidate: str) -> bool:
        return _is_phone(candidate, self._regions)


@functools.lru_cache(maxsize=4096)
def _is_phone(candidate: str, regions: tuple[str, ...]) -> bool:
    """libphonenumber's validity (its cost dominates the guard; a stream re-checks the
    number it holds after every delta, so answers are remembered)."""
    digits = sum(c.isdigit() for c in candidate)
    if digits < 7 or digits > 15:
        return False
    hints: tuple[str | None, ...] = (None,) if candidate.startswith("+") else regions
    for region in hints:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


_TRIMMED = frozenset((PHONE, PAYMENT_CARD, IBAN))


def _may_hold(pattern: re.Pattern[str], s: str, pos: int, endpos: int) -> bool:
    """Whether ``s[pos:endpos]`` can hold a match of ``pattern`` at all (cheap tests first:
    a card has 13 digits or more, an SSN its dashes, an IPv4 address its three dots)."""
    if pattern is _CARD:
        return endpos - pos >= 14
    if pattern is _SSN:
        return s.count("-", pos, endpos) >= 2
    if pattern is _IPV4:
        return s.count(".", pos, endpos) >= 3
    return True


def _confirm(
    found: list[Finding],
    s: str,
    match: re.Match[str],
    category: str,
    valid: Callable[[str], bool],
) -> None:
    """Add ``match`` (or, for the shapes that may take in a word too many, its longest
    prefix) to ``found`` when the library confirms it and nothing found already covers it."""
    start = match.start()
    if (start and s[start - 1] in _NOT_AFTER[match.re]) or _inside(found, start, match.end()):
        return
    text = match.group()
    for candidate in _prefixes(text) if category in _TRIMMED else (text,):
        if valid(candidate):
            found.append(Finding(start, start + len(candidate), category, placeholder(category)))
            return


def _prefixes(candidate: str) -> Iterable[str]:
    """``candidate``, then shorter at each separator from the right: a greedy candidate may
    have taken in the next word or number ("DE89 … 3000 IS", "+1 415 555 2671 2 times")."""
    yield candidate
    for i in range(len(candidate) - 1, 0, -1):
        if candidate[i] in " -.)" and candidate[i - 1].isalnum():
            yield candidate[:i]


def _emails(s: str) -> list[Finding]:
    """Addresses, found from each ``@`` outwards (no scan of every position)."""
    found: list[Finding] = []
    at = s.find("@")
    while at >= 0:
        start = at
        while start > 0 and at - start < 64 and s[start - 1] in _EMAIL_LOCAL:
            start -= 1
        domain = _EMAIL_DOMAIN.match(s, at + 1)
        if start < at and domain is not None and (start == 0 or s[start - 1] not in _EMAIL_LOCAL):
            found.append(Finding(start, domain.end(), EMAIL, placeholder(EMAIL)))
            at = s.find("@", domain.end())
        else:
            at = s.find("@", at + 1)
    return found


def _has_digit(text: str) -> bool:
    return any(c in text for c in "0123456789")


def _inside(found: list[Finding], start: int, end: int) -> bool:
    """Already covered by a finding (a card number is not also a phone number)."""
    return any(f.start < end and start < f.end for f in found)


@functools.lru_cache(maxsize=4096)
def _is_card(candidate: str) -> bool:
    """The network's length and the Luhn checksum (a stream re-checks the number it holds
    after every delta: answers are remembered)."""
    digits = candidate.replace(" ", "").replace("-", "")
    return _card_length_fits(digits) and luhn.is_valid(digits)


def _card_length_fits(digits: str) -> bool:
    """The number's length is one its network issues (ISO/IEC 7812 IIN ranges: Visa 4…,
    Mastercard 51-55 and 2221-2720, Amex 34/37, Discover and UnionPay 6…, Diners and JCB 3…)."""
    n = len(digits)
    match digits[0]:
        case "4":
            return n in (13, 16, 19)
        case "5" | "2":
            return n == 16
        case "3":
            return n == 15 if digits[1] in "47" else 14 <= n <= 19
        case "6":
            return 16 <= n <= 19
    return False


def _is_iban(candidate: str) -> bool:
    return bool(iban.is_valid(candidate))


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True


def _is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True
