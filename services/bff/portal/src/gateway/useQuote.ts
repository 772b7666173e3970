// POST /partner/keys/quote as the budget is typed: what the balance pays (budget + fee).

import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import type { Quote } from "../types";

export function useQuote(budget: string): { quote: Quote | null; error: string | null } {
  const [quote, setQuote] = useState<Quote | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setError(null);
    if (!/^\d+$/.test(budget.trim()) || BigInt(budget.trim()) <= 0n) {
      setQuote(null);
      return;
    }
    let current = true;
    const timer = window.setTimeout(() => {
      api<Quote>("POST", "/partner/keys/quote", { body: { budget_credits: Number(budget.trim()) } }).then(
        (q) => current && setQuote(q),
        (e: unknown) => {
          if (!current) return;
          setQuote(null);
          setError(e instanceof ApiError ? (e.fields["budget_credits"] ?? e.message) : String(e));
        },
      );
    }, 250);
    return () => {
      current = false;
      window.clearTimeout(timer);
    };
  }, [budget]);
  return { quote, error };
}
