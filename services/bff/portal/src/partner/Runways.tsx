// Each key's runway at its recent rate (GET /partner/usage/runway): when its budget runs
// out, or when auto top-up fires first; as words and as a bar over the next 30 days.

import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { credits, formatDecimal } from "../format";
import { messageOf } from "./nav";
import type { Page, Key } from "../types";
import type { Runway } from "./types";

const HORIZON_DAYS = 30;
const REASONS: Record<string, string> = {
  pay_as_you_go: "Pay as you go from the customer's AI credits: no budget to run out.",
  revoked: "Revoked.",
  suspended: "Suspended: no spend until it is resumed.",
  expired: "Expired.",
  exhausted: "The budget is used up: top the key up to use it again.",
  no_recent_usage: "No spend recently, so no end in sight.",
};

function rate(r: Runway): string {
  const hours = Number(r.window_hours);
  if (hours >= 23.99) return "At the last day's rate";
  const shown = formatDecimal(r.window_hours, 0, 1);
  return `At the rate of the last ${shown === "1" ? "hour" : `${shown} hours`}`;
}

export function runwayText(r: Runway, key: Key | undefined): string {
  if (r.event === null || r.in_days === null) return REASONS[r.reason ?? ""] ?? (r.reason ?? "");
  const days = `~${formatDecimal(r.in_days, 0, 1)} day${r.in_days === "1.0" ? "" : "s"}`;
  if (r.event === "auto_topup") {
    const amount = key?.auto_topup.amount_usd ? ` adds $${formatDecimal(key.auto_topup.amount_usd, 2, 2)}` : " fires";
    return `${rate(r)}, auto top-up${amount} in ${days} (then it keeps going while your balance pays).`;
  }
  return `${rate(r)}, runs out in ${days}.`;
}

export function Runways({ keys, version }: { keys: Key[]; version: number }) {
  const [runways, setRunways] = useState<Runway[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let stale = false;
    api<Page<Runway>>("GET", "/partner/usage/runway", { query: { limit: 200 } }).then(
      (p) => {
        if (stale) return;
        setRunways(p.data);
        setError(null);
      },
      (e) => !stale && setError(messageOf(e)),
    );
    return () => {
      stale = true;
    };
  }, [version]);

  const byId = Object.fromEntries(keys.map((k) => [k.id, k]));
  return (
    <section class="card" aria-labelledby="runway-title" data-runways>
      <div class="card-head">
        <h2 id="runway-title">Runway</h2>
      </div>
      <p class="hint">How long each key's remaining budget lasts at its recent spend. The bar spans the next {HORIZON_DAYS} days.</p>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {runways === null ? (
        <p class="muted" aria-busy="true">
          Loading…
        </p>
      ) : runways.length === 0 ? (
        <p class="empty">No keys yet.</p>
      ) : (
        <ul class="runways">
          {runways.map((r) => {
            const key = byId[r.key_id];
            const days = r.in_days === null ? null : Number(r.in_days);
            const width = days === null ? 0 : Math.max(2, Math.min(100, (days / HORIZON_DAYS) * 100));
            return (
              <li data-runway={r.key_id} data-in-days={r.in_days ?? ""} data-event={r.event ?? ""}>
                <div class="runway-head">
                  <span class="truncate cell-name" title={key?.name ?? r.key_id}>
                    <strong>{key?.name ?? r.key_id}</strong>
                  </span>
                  <span class="muted money" title={`${r.settled_remaining_credits} credits`}>
                    {credits(r.settled_remaining_credits)} credits left · {credits(r.rate_credits_per_day)} / day
                  </span>
                </div>
                {days !== null && (
                  <span class={days < 3 ? "bar bar-high" : "bar"} aria-hidden="true">
                    <span style={{ width: `${width}%` }} />
                  </span>
                )}
                <p class="runway-text" data-runway-text>
                  {runwayText(r, key)}
                  {key?.auto_topup.enabled && r.event !== "auto_topup" && (
                    <span class="muted">
                      {" "}
                      Auto top-up is on
                      {key.auto_topup.threshold_usd ? ` (below $${formatDecimal(key.auto_topup.threshold_usd, 2, 2)})` : ""}.
                    </span>
                  )}
                  {key?.auto_topup.last_error && <span class="field-error"> Last auto top-up failed: {key.auto_topup.last_error}</span>}
                </p>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
