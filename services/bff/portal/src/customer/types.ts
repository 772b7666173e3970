// The customer API's answers that the customer's pages read (cg_bff.schemas.customers, usage).

import type { AiCredits } from "../types";

export type Missing = "self_service_disabled" | "ai_credits_disabled" | "ai_gateway_menu_disabled";

export interface CustomerSelf {
  id: string;
  name: string;
  partner_id: string;
  ai_credits_enabled: boolean;
  api_access_enabled: boolean;
  ai_gateway: { visible: boolean; missing: Missing[] };
  gateway_base_url: string;
}

export interface CustomerBalance {
  customer_id: string;
  balance: AiCredits;
  reserved: AiCredits;
  available: AiCredits;
}

export interface CustomerSeriesPoint {
  start: string;
  start_ms: number;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  ai_credits_uai: number;
  ai_credits: string;
  error_requests: number;
}

export interface CustomerSeries {
  key_id: string | null;
  granularity: "hour" | "day";
  start: string;
  end: string;
  points: CustomerSeriesPoint[];
}

/** Why AI Gateway is hidden, for people, and who can change it. */
export const MISSING_TEXT: Record<Missing, string> = {
  self_service_disabled: "Your provider has not turned on customer self-service for AI Gateway keys.",
  ai_credits_disabled: "AI Credits are not enabled for your account.",
  ai_gateway_menu_disabled: "The AI Gateway menu is not enabled for your account (Features & Add-ons).",
};
