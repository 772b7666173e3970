// Display of the API's exact decimal strings: rounding and thousand separators are done on
// the digits (BigInt), never through a float, so a 12-digit balance shows every digit.

import type { Money } from "./types";

/** "1234567.891000" -> "1,234,567.89": rounded half up to `maxPlaces`, at least `minPlaces`. */
export function formatDecimal(value: string, minPlaces = 0, maxPlaces = 2): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value.trim());
  if (!match) return value;
  const negative = match[1] === "-";
  let whole = match[2] ?? "0";
  let fraction = match[3] ?? "";
  if (fraction.length > maxPlaces) {
    const kept = BigInt(whole + fraction.slice(0, maxPlaces)) + (Number(fraction[maxPlaces]) >= 5 ? 1n : 0n);
    const digits = kept.toString().padStart(maxPlaces + 1, "0");
    whole = digits.slice(0, digits.length - maxPlaces);
    fraction = digits.slice(digits.length - maxPlaces);
  }
  fraction = fraction.replace(/0+$/, "");
  if (fraction.length < minPlaces) fraction = fraction.padEnd(minPlaces, "0");
  const grouped = whole.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const zero = /^[0,]*$/.test(grouped) && /^0*$/.test(fraction);
  return (negative && !zero ? "-" : "") + grouped + (fraction ? "." + fraction : "");
}

function belowOne(value: string): boolean {
  return /^-?0(\.|$)/.test(value.trim());
}

/** Credits: two places, or up to six below 1 (one request's cost is a fraction of a credit);
 * `exact`: every place the API gives (six). */
export function credits(amount: Money | string, exact = false): string {
  const value = typeof amount === "string" ? amount : amount.credits;
  return formatDecimal(value, 0, exact || belowOne(value) ? 6 : 2);
}

/** US dollars: cents, or up to six places below $1. */
export function usd(amount: Money | string): string {
  const value = typeof amount === "string" ? amount : amount.usd;
  return "$" + formatDecimal(value, 2, belowOne(value) ? 6 : 2);
}

/** An integer count with separators ("12,000"). */
export function count(n: number): string {
  return formatDecimal(String(Math.trunc(n)), 0, 0);
}

/** A date-time for people, in the browser's time zone; "never" for null. */
export function when(iso: string | null, never = "Never"): string {
  if (!iso) return never;
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** "3 min ago" for recent times, else the date. */
export function ago(iso: string | null, nowMs: number = Date.now()): string {
  if (!iso) return "Never";
  const s = Math.round((nowMs - new Date(iso).getTime()) / 1000);
  if (s < 45) return "Just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return when(iso);
}

/** How much of the budget is spent, 0–100, for a bar (display only). */
export function spentPercent(spent: Money | null, budget: Money | null): number {
  if (!spent || !budget || budget.ucr <= 0) return 0;
  return Math.min(100, Math.max(0, (spent.ucr / budget.ucr) * 100));
}
