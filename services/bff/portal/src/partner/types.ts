// The management API's answers read by the partner's Usage, Customers and API & Webhooks
// pages (services/bff/cg_bff/usage/schemas.py, schemas/customers.py, schemas/partner.py,
// auth/schemas.py, webhooks/schemas.py). Money: integers beside exact decimal strings.

import type { AiCredits, Money } from "../types";

export type Granularity = "hour" | "day";
export type SeriesBy = "partner" | "key" | "customer" | "model";

export interface SeriesPoint {
  start: string;
  start_ms: number;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  ai_credits_uai: number;
  ai_credits: string;
  error_requests: number;
  avg_latency_ms: number | null;
  cost_ucr: number;
  cost_credits: string;
  revenue_ucr: number;
  margin_ucr: number;
}

export interface Series {
  by: SeriesBy;
  id: string | null;
  granularity: Granularity;
  start: string;
  end: string;
  points: SeriesPoint[];
}

export type Outcome = "ok" | "upstream_error" | "client_disconnected" | "unknown";

export interface RequestRow {
  request_id: string;
  time: string;
  time_ms: number;
  key_id: string;
  customer_id: string | null;
  model: string;
  input_tokens: number;
  output_tokens: number;
  ai_credits_uai: number;
  ai_credits: string;
  cost_ucr: number;
  cost_credits: string;
  source: "reported" | "estimated" | "unknown";
  outcome: Outcome;
  latency_ms: number;
  stream: boolean;
}

export type ProfitBy = "customer" | "key" | "model";

export interface ProfitRow {
  id: string | null;
  requests: number;
  ai_credits: string;
  revenue_ucr: number;
  revenue_credits: string;
  revenue_usd: string;
  cost_ucr: number;
  cost_credits: string;
  cost_usd: string;
  margin_ucr: number;
  margin_credits: string;
  margin_usd: string;
  margin_pct: string | null;
}

export interface Profit {
  by: ProfitBy;
  start: string;
  end: string;
  rows: ProfitRow[];
  total: ProfitRow;
}

export interface Runway {
  key_id: string;
  event: "auto_topup" | "exhausted" | null;
  at: string | null;
  in_days: string | null;
  reason: string | null;
  settled_remaining_ucr: number;
  settled_remaining_credits: string;
  spent_ucr: number;
  window_hours: string;
  rate_ucr_per_day: number;
  rate_credits_per_day: string;
}

export type Missing = "self_service_disabled" | "ai_credits_disabled" | "ai_gateway_menu_disabled";

export interface CustomerFull {
  id: string;
  name: string;
  ai_credits_enabled: boolean;
  ai_gateway_menu_enabled: boolean;
  api_access_enabled: boolean;
  ai_gateway: { visible: boolean; missing: Missing[] };
  ai_credit_balance: AiCredits;
}

export interface AiCreditGrant {
  customer_id: string;
  granted: AiCredits;
  balance: AiCredits;
  replayed: boolean;
}

export interface SelfService {
  enabled: boolean;
  apply_to_new_customers: boolean;
  default_profit_multiplier: string;
  ai_credit_price_cents: string;
  deposit_per_key: Money;
}

export interface Token {
  id: string;
  name: string;
  scope: "read" | "write";
  prefix: string;
  created_by: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface TokenCreated {
  token: Token;
  secret: string;
}

export interface Endpoint {
  id: string;
  url: string;
  description: string;
  event_types: string[];
  enabled: boolean;
  created_at: string;
  updated_at: string;
}

export interface EndpointCreated {
  endpoint: Endpoint;
  secret: string | null;
  replayed: boolean;
}

export interface Delivery {
  id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  state: "pending" | "succeeded" | "dead";
  generation: number;
  attempts: number;
  last_status_code: number | null;
  last_error: string;
  last_attempt_at: string | null;
  next_attempt_at: string | null;
  created_at: string;
}

/** The event types an endpoint may subscribe to (cg_bff.webhooks.events.SUBSCRIBABLE). */
export const EVENT_TYPES = [
  "key.low_budget",
  "key.exhausted",
  "key.suspended",
  "key.resumed",
  "auto_topup.succeeded",
  "auto_topup.failed",
  "partner.balance_low",
  "customer_key.created",
  "customer_key.revoked",
] as const;
