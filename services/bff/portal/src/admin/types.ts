// The platform admin API's answers (cg_bff.schemas.admin).

import type { Money } from "../types";

export interface AdminPartner {
  id: string;
  name: string;
  tier: string;
  status: "active" | "suspended";
  fee_rate: string;
  external_ref: string | null;
  created_at: string | null;
  balance: Money;
  available: Money;
}

export interface Deposit {
  partner_id: string;
  amount: Money;
  balance: Money;
  transfer_id: string;
  replayed: boolean;
  provider: string;
}

/** The catalog's tiers (services/keys/cg_keys/catalog.yaml); the API checks the name. */
export const TIERS = [
  { id: "starter", label: "Starter: budget models, 10% fee" },
  { id: "growth", label: "Growth: budget and mid tier, 5% fee" },
  { id: "enterprise", label: "Enterprise: every model, 2% fee" },
] as const;
