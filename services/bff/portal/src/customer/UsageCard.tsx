// The customer's usage over time: AI credits charged per hour (last 24 h) or per day (last
// 30 days), as a chart with the totals beside it as text.

import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api";
import { Chart } from "../components/Chart";
import { count, formatDecimal } from "../format";
import type { CustomerSeries } from "./types";

export function UsageCard({ refresh }: { refresh: number }) {
  const [granularity, setGranularity] = useState<"hour" | "day">("hour");
  const [series, setSeries] = useState<CustomerSeries | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const query =
      granularity === "day" ? { granularity, from: new Date(Date.now() - 30 * 86_400_000).toISOString() } : { granularity };
    api<CustomerSeries>("GET", "/customer/usage/series", { query }).then(
      (s) => {
        setSeries(s);
        setError(null);
      },
      (e: unknown) => setError(e instanceof Error ? e.message : String(e)),
    );
  }, [granularity, refresh]);

  const totals = useMemo(() => {
    const points = series?.points ?? [];
    const uai = points.reduce((sum, p) => sum + BigInt(p.ai_credits_uai), 0n);
    const whole = uai / 1_000_000n;
    const frac = (uai % 1_000_000n).toString().padStart(6, "0");
    return { requests: points.reduce((n, p) => n + p.requests, 0), aiCredits: `${whole}.${frac}` };
  }, [series]);
  const x = useMemo(() => (series?.points ?? []).map((p) => p.start_ms / 1000), [series]);
  const chartSeries = useMemo(
    () => [{ label: "AI credits", values: (series?.points ?? []).map((p) => p.ai_credits_uai / 1_000_000) }],
    [series],
  );
  const span = granularity === "hour" ? "the last 24 hours" : "the last 30 days";

  return (
    <section class="card" aria-labelledby="usage-title">
      <div class="card-head">
        <h2 id="usage-title">Usage</h2>
        <div role="group" aria-label="Period" class="segmented">
          {(["hour", "day"] as const).map((g) => (
            <button type="button" class="button button-small" aria-pressed={granularity === g} onClick={() => setGranularity(g)}>
              {g === "hour" ? "24 h, hourly" : "30 days, daily"}
            </button>
          ))}
        </div>
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      <p class="usage-totals" data-usage-totals data-requests={totals.requests}>
        In {span}: <strong>{count(totals.requests)}</strong> request{totals.requests === 1 ? "" : "s"},{" "}
        <strong>{formatDecimal(totals.aiCredits, 0, 6)}</strong> AI credits.
      </p>
      {series && series.points.length > 0 ? (
        <Chart x={x} series={chartSeries} unit="AI credits" label={`AI credits charged per ${granularity} in ${span}`} height={200} />
      ) : (
        <p class="empty">{series ? "No requests in this period yet." : "Loading usage…"}</p>
      )}
    </section>
  );
}
