"""What an error from the Anthropic Messages API means: the ``anthropic`` provider's table.

Rows are tried in order; the first that matches wins, else the HTTP status decides
(:func:`service.providers.upstream.fault_of_status`). Anthropic names broad kinds in
``error.type`` and some causes in ``error.details.error_code``; several causes share
``invalid_request_error`` with a 400 and differ only in the message (an account out of
credit, a prompt past the context window, the output filter), so those rows match the
message. Sources (all quoted in ``tests/test_upstream_error_tables.py``): Anthropic's errors
page (docs.anthropic.com/en/api/errors) and the bodies users reported from the API.
"""

from __future__ import annotations

from service.providers.upstream import Fault, Rule

TABLE: tuple[Rule, ...] = (
    # Out of money: "Your credit balance is too low to access the Anthropic API…" is a 400.
    Rule(Fault.QUOTA, type="billing_error"),
    Rule(Fault.QUOTA, code="contract_spend_limit_reached"),
    Rule(Fault.QUOTA, code="enforced_spend_limit_reached"),
    Rule(Fault.QUOTA, code="linked_organization_spend_limit_reached"),
    Rule(Fault.QUOTA, message=r"credit balance is too low"),
    Rule(Fault.QUOTA, message=r"reached your specified API usage limits"),
    # The prompt does not fit the model's context window.
    Rule(Fault.CONTEXT_WINDOW, message=r"prompt is too long: \d+ tokens > \d+"),
    Rule(Fault.CONTEXT_WINDOW, message=r"exceed context limit"),
    Rule(Fault.CONTEXT_WINDOW, message=r"context window"),
    # The output filter ("Output blocked by content filtering policy").
    Rule(Fault.CONTENT_POLICY, message=r"content filtering policy"),
    Rule(Fault.AUTH, type="authentication_error"),
    Rule(Fault.PERMISSION, type="permission_error"),
    Rule(Fault.MODEL_NOT_FOUND, type="not_found_error"),
    Rule(Fault.RATE_LIMIT, type="rate_limit_error"),
    Rule(Fault.OVERLOADED, type="overloaded_error"),
    Rule(Fault.SERVER, type="api_error"),
    Rule(Fault.SERVER, type="timeout_error"),
    # Anything else of type invalid_request_error or request_too_large is the status's
    # (400, 413): the caller's to fix.
)

STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""An ``error`` event inside a 200 stream carries a type, not a status: the status it stands
for (anything else counts as a 500)."""
