// The Create Key form's model: its fields, what can be checked before asking the API, the
// request body of POST /partner/keys, and the live billing preview.

import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { BillingPreview, Partner } from "../types";

export interface Form {
  name: string;
  description: string;
  budget: string;
  models: string[];
  billing: boolean;
  customerId: string;
  multiplier: string;
  centsPerCredit: string;
  floor: string;
  autoTopUp: boolean;
  threshold: string;
  topUpAmount: string;
  domains: string;
  rpm: string;
  tpm: string;
  expires: string;
}

// the fields shown next to an input; an error about any other is listed at the top
export const RENDERED = [
  "name",
  "description",
  "budget_credits",
  "allowed_models",
  "billing.customer_id",
  "billing.profit_multiplier",
  "billing.price_per_ai_credit_cents",
  "billing.floor_usd_per_mtok",
  "auto_topup.threshold_usd",
  "auto_topup.amount_usd",
  "allowed_domains",
  "rpm_limit",
  "tpm_limit",
  "expires_at",
];
// the API's name of each field of the form
export const API_NAMES: Partial<Record<keyof Form, string>> = {
  name: "name",
  description: "description",
  budget: "budget_credits",
  models: "allowed_models",
  customerId: "billing.customer_id",
  multiplier: "billing.profit_multiplier",
  centsPerCredit: "billing.price_per_ai_credit_cents",
  floor: "billing.floor_usd_per_mtok",
  threshold: "auto_topup.threshold_usd",
  topUpAmount: "auto_topup.amount_usd",
  domains: "allowed_domains",
  rpm: "rpm_limit",
  tpm: "tpm_limit",
  expires: "expires_at",
};
const DECIMAL = /^\d+(\.\d+)?$/;
const WHOLE = /^\d+$/;

export function emptyForm(partner: Partner): Form {
  return {
    name: "",
    description: "",
    budget: "1000",
    models: [],
    billing: false,
    customerId: "",
    multiplier: partner.self_service.default_profit_multiplier || "1.5",
    centsPerCredit: partner.self_service.ai_credit_price_cents || "1",
    floor: "",
    autoTopUp: false,
    threshold: "5",
    topUpAmount: "20",
    domains: "",
    rpm: "0",
    tpm: "0",
    expires: "",
  };
}

/** What this page can tell before asking the API (the API checks everything again). */
export function check(f: Form): Record<string, string> {
  const e: Record<string, string> = {};
  if (!f.name.trim()) e["name"] = "Give the key a name.";
  if (!WHOLE.test(f.budget.trim()) || BigInt(f.budget.trim() || "0") <= 0n)
    e["budget_credits"] = "A whole number of credits, at least 1.";
  if (!f.models.length) e["allowed_models"] = "Choose at least one model.";
  if (f.billing) {
    if (!f.customerId) e["billing.customer_id"] = "Choose the customer to bill.";
    if (!DECIMAL.test(f.multiplier.trim()) || Number(f.multiplier) <= 0)
      e["billing.profit_multiplier"] = "A number above 0, e.g. 1.5.";
    if (!DECIMAL.test(f.centsPerCredit.trim()) || Number(f.centsPerCredit) <= 0)
      e["billing.price_per_ai_credit_cents"] = "A number of cents above 0.";
    if (f.floor.trim() && !DECIMAL.test(f.floor.trim())) e["billing.floor_usd_per_mtok"] = "A number of dollars, or empty.";
  }
  if (f.autoTopUp) {
    if (!DECIMAL.test(f.threshold.trim())) e["auto_topup.threshold_usd"] = "A number of dollars.";
    if (!DECIMAL.test(f.topUpAmount.trim()) || Number(f.topUpAmount) <= 0)
      e["auto_topup.amount_usd"] = "A number of dollars above 0.";
  }
  if (!WHOLE.test(f.rpm.trim())) e["rpm_limit"] = "A whole number (0: no limit).";
  if (!WHOLE.test(f.tpm.trim())) e["tpm_limit"] = "A whole number (0: no limit).";
  return e;
}

export function body(f: Form): Record<string, unknown> {
  const domains = f.domains
    .split(/[\s,]+/)
    .map((d) => d.trim())
    .filter(Boolean);
  return {
    name: f.name.trim(),
    description: f.description.trim(),
    budget_credits: Number(f.budget.trim()),
    allowed_models: f.models,
    billing: f.billing
      ? {
          customer_id: f.customerId,
          profit_multiplier: f.multiplier.trim(),
          price_per_ai_credit_cents: f.centsPerCredit.trim(),
          floor_usd_per_mtok: f.floor.trim() || null,
        }
      : null,
    auto_topup: f.autoTopUp
      ? { enabled: true, threshold_usd: f.threshold.trim(), amount_usd: f.topUpAmount.trim() }
      : null,
    allowed_domains: domains,
    rpm_limit: Number(f.rpm.trim()),
    tpm_limit: Number(f.tpm.trim()),
    expires_at: f.expires ? new Date(f.expires).toISOString() : null,
  };
}

export function usePreview(f: Form, open: boolean): { preview: BillingPreview | null; error: string | null } {
  const [preview, setPreview] = useState<BillingPreview | null>(null);
  const [error, setError] = useState<string | null>(null);
  const ready =
    open &&
    f.billing &&
    f.models.length > 0 &&
    DECIMAL.test(f.multiplier.trim()) &&
    DECIMAL.test(f.centsPerCredit.trim()) &&
    (!f.floor.trim() || DECIMAL.test(f.floor.trim()));
  const request = ready
    ? JSON.stringify({
        models: f.models,
        profit_multiplier: f.multiplier.trim(),
        price_per_ai_credit_cents: f.centsPerCredit.trim(),
        floor_usd_per_mtok: f.floor.trim() || null,
      })
    : "";
  useEffect(() => {
    setError(null);
    if (!request) {
      setPreview(null);
      return;
    }
    let current = true;
    const timer = window.setTimeout(() => {
      api<BillingPreview>("POST", "/partner/billing-preview", { body: JSON.parse(request) }).then(
        (p) => current && setPreview(p),
        (e: unknown) => {
          if (!current) return;
          setPreview(null);
          setError(e instanceof Error ? e.message : String(e));
        },
      );
    }, 250);
    return () => {
      current = false;
      window.clearTimeout(timer);
    };
  }, [request]);
  return { preview, error };
}

