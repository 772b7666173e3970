"""Whether a customer sees AI Gateway in its portal (and so may create its own keys).

All three must hold, and this is the one place that says so: reads show the outcome
(``Customer.ai_gateway_visible``) and what is missing, and CreateCustomerKey refuses
with the first missing one.

1. the partner's customer self-service master switch (``self_service_disabled``);
2. the customer's AI Credits (``ai_credits_disabled``);
3. the customer's AI Gateway menu toggle, Features & Add-ons (``ai_gateway_menu_disabled``).
"""

from __future__ import annotations

from cg_keys.models import Customer, Partner

SELF_SERVICE_DISABLED = "self_service_disabled"
AI_CREDITS_DISABLED = "ai_credits_disabled"
MENU_DISABLED = "ai_gateway_menu_disabled"

# why CreateCustomerKey is refused, per missing condition
REFUSALS = {
    SELF_SERVICE_DISABLED: "the partner has not enabled customer self-service",
    AI_CREDITS_DISABLED: "AI Credits are not enabled for this customer",
    MENU_DISABLED: "the AI Gateway menu is not enabled for this customer",
}


def missing(partner: Partner, customer: Customer) -> list[str]:
    """The conditions that do not hold, in the order above (empty: AI Gateway is visible)."""
    checks = (
        (partner.ss_enabled, SELF_SERVICE_DISABLED),
        (customer.ai_credits_enabled, AI_CREDITS_DISABLED),
        (customer.ai_gateway_menu_enabled, MENU_DISABLED),
    )
    return [what for ok, what in checks if not ok]
