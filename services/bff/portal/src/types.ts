// The shapes of the management API's answers that the portal reads (services/bff/cg_bff/schemas).
// Money is always given by the API as exact integers beside decimal strings: never floats.

/** An amount of credits: micro-credits (exact) and decimal strings for display (100 credits = $1). */
export interface Money {
  ucr: number;
  credits: string;
  usd: string;
}

export interface AiCredits {
  uai: number;
  ai_credits: string;
}

export type UserKind = "admin" | "partner" | "customer";
export type Role = "owner" | "admin" | "viewer";

export interface User {
  id: string;
  email: string;
  name: string;
  kind: UserKind;
  role: Role | null;
  partner_id: string | null;
  customer_id: string | null;
}

export interface SignedIn {
  user: User;
  csrf_token: string;
}

export interface Session {
  user: User | null;
  principal: { kind: UserKind; via: "session" | "token"; can_write: boolean; role: Role | null };
  csrf_token: string | null;
}

export interface Partner {
  id: string;
  name: string;
  tier: string;
  status: "active" | "suspended";
  fee_rate: string;
  fee_percent: string;
  balance: Money;
  available: Money;
  reserved: Money;
  spent_this_month: Money;
  month_started_at: string;
  gateway_base_url: string;
  self_service: { enabled: boolean; default_profit_multiplier: string; ai_credit_price_cents: string };
}

export type KeyStatus = "active" | "suspended" | "exhausted" | "expired" | "revoked";

export interface Key {
  id: string;
  name: string;
  description: string;
  prefix: string;
  status: KeyStatus;
  status_reason: string | null;
  kind: "partner" | "customer";
  owner_customer_id: string | null;
  allowed_models: string[];
  allowed_domains: string[];
  rate_limits: { rpm: number; tpm: number };
  billing: {
    customer_id: string;
    profit_multiplier: string;
    price_per_ai_credit_cents: string;
    floor_usd_per_mtok: string | null;
  } | null;
  auto_topup: { enabled: boolean; threshold_usd: string | null; amount_usd: string | null; last_error: string | null };
  expires_at: string | null;
  created_at: string | null;
  last_used_at: string | null;
  budget: Money | null;
  spent: Money | null;
  remaining: Money | null;
}

export interface KeyDetail extends Key {
  reserved: Money | null;
  used: Money | null;
  settled_remaining: Money | null;
  refunded: Money | null;
  min_request: Money;
}

export interface Page<T> {
  data: T[];
  next_cursor: string | null;
}

export interface KeyCreated {
  key: KeyDetail;
  secret: string | null;
  replayed: boolean;
  total: Money;
  fee: Money;
}

export interface KeyRegenerated {
  key: KeyDetail;
  secret: string | null;
  replayed: boolean;
}

export interface TopUp {
  key: KeyDetail;
  amount: Money;
  fee: Money;
  total: Money;
  replayed: boolean;
}

export interface Quote {
  budget: Money;
  fee: Money;
  total: Money;
  fee_rate: string;
}

export type Category = "budget" | "mid" | "premium";

export interface Model {
  id: string;
  provider: string;
  category: Category;
  input_usd_per_mtok: string;
  output_usd_per_mtok: string;
}

export interface Catalog {
  tier: string | null;
  catalog_version: string;
  categories: { category: Category; label: string; models: Model[] }[];
}

export interface Customer {
  id: string;
  name: string;
  ai_credits_enabled: boolean;
  ai_credit_balance: AiCredits;
}

export interface BillingPreviewRow {
  model: string;
  provider_cost: Money;
  customer_price: Money;
  customer_price_ai_credits: AiCredits;
  partner_margin: Money;
}

export interface BillingPreview {
  sample_input_tokens: number;
  sample_output_tokens: number;
  rows: BillingPreviewRow[];
}

/** The `usage`, `balance` and `key` events of GET /api/v1/events (cg_bff.usage.live). */
export interface LiveUsage {
  request_id: string;
  key_id: string;
  cost_ucr?: number;
  time_ms: number;
}
export interface LiveBalance {
  account: string;
  posted_ucr: number;
  available_ucr: number;
}
export interface LiveKey {
  key_id: string;
  status: string;
  change: string;
}
