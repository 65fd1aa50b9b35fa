"""What an error from a Chat Completions upstream means: the table for the ``openai`` and
``openai_compatible`` providers.

Rows are tried in order; the first that matches wins, else the HTTP status decides
(:func:`service.providers.upstream.fault_of_status`). OpenAI names most causes in
``error.code`` (and older or compatible servers in ``error.type``); where a server names
nothing better, the message does. Sources of the bodies matched here (all quoted in
``tests/test_upstream_error_tables.py``): OpenAI's error-code guide
(platform.openai.com/docs/guides/error-codes) and the bodies users of OpenAI, Azure OpenAI,
vLLM, llama.cpp's server, Ollama, DeepSeek and OpenRouter reported.
"""

from __future__ import annotations

from service.providers.upstream import Fault, Rule

TABLE: tuple[Rule, ...] = (
    # Out of money: retrying or waiting cannot help; another target can.
    Rule(Fault.QUOTA, code="insufficient_quota"),
    Rule(Fault.QUOTA, type="insufficient_quota"),  # older bodies: code null
    Rule(Fault.QUOTA, code="billing_hard_limit_reached"),
    Rule(Fault.QUOTA, code="billing_not_active"),
    Rule(Fault.QUOTA, message=r"exceeded your current quota"),
    Rule(Fault.QUOTA, message=r"insufficient (account )?(balance|credits?|funds|quota)"),
    # The prompt does not fit the model: a model with a larger window can take it.
    Rule(Fault.CONTEXT_WINDOW, code="context_length_exceeded"),
    Rule(Fault.CONTEXT_WINDOW, type="exceed_context_size_error"),  # llama.cpp server
    Rule(Fault.CONTEXT_WINDOW, message=r"maximum context length is \d+"),  # OpenAI, vLLM
    Rule(Fault.CONTEXT_WINDOW, message=r"exceeds the available context size"),  # llama.cpp
    Rule(Fault.CONTEXT_WINDOW, message=r"context size has been exceeded"),  # llama.cpp
    Rule(Fault.CONTEXT_WINDOW, message=r"exceeds? (the )?(model'?s? )?context (window|length)"),
    # Refused by a safety system (OpenAI, Azure OpenAI's content filter).
    Rule(Fault.CONTENT_POLICY, code="content_policy_violation"),
    Rule(Fault.CONTENT_POLICY, code="content_filter"),
    Rule(Fault.CONTENT_POLICY, message=r"content management policy"),
    # Switchboard's own credentials or account.
    Rule(Fault.AUTH, code="invalid_api_key"),
    Rule(Fault.AUTH, type="authentication_error"),
    Rule(Fault.PERMISSION, code="unsupported_country_region_territory"),
    Rule(Fault.PERMISSION, type="request_forbidden"),
    Rule(Fault.PERMISSION, type="permission_error"),
    Rule(Fault.MODEL_NOT_FOUND, code="model_not_found"),
    Rule(Fault.MODEL_NOT_FOUND, message=r"\bmodel\b.{0,80}\b(not found|does not exist)"),
    # Transient.
    Rule(Fault.RATE_LIMIT, code="rate_limit_exceeded"),
    Rule(Fault.RATE_LIMIT, type="tokens"),
    Rule(Fault.RATE_LIMIT, type="requests"),
    Rule(Fault.RATE_LIMIT, type="rate_limit_error"),
    Rule(Fault.OVERLOADED, message=r"\boverloaded\b"),
    Rule(Fault.SERVER, type="server_error"),
)

STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "tokens": 429,
    "requests": 429,
}
"""An error object inside a 200 stream carries a type, not a status: the status it stands
for, when no row of :data:`TABLE` says more (anything else counts as a 500)."""
