// Spend over time, for the partner as a whole or split per key, customer or model, by hour
// or by day: GET /partner/usage/series, one call per line (the API names one subject each).

import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api";
import { Chart, type ChartSeries } from "../components/Chart";
import { count, credits } from "../format";
import type { Series, Granularity, SeriesBy } from "./types";
import { messageOf } from "./nav";

/** A line's subject: an id and the name shown. */
export interface Subject {
  id: string;
  name: string;
}

export interface SpendChartProps {
  subjects: Record<Exclude<SeriesBy, "partner">, Subject[]>;
  /** Bumped by the live events: load again. */
  version: number;
}

const MAX_LINES = 6;
type Metric = "spend" | "requests";

function ucrSum(s: Series): number {
  return s.points.reduce((n, p) => n + p.cost_ucr, 0);
}

/** The exact sum of micro-credits as a credits string (no float). */
function ucrCredits(ucr: number): string {
  const whole = BigInt(ucr);
  const neg = whole < 0n;
  const abs = neg ? -whole : whole;
  return (neg ? "-" : "") + (abs / 1_000_000n).toString() + "." + (abs % 1_000_000n).toString().padStart(6, "0");
}

export function SpendChart({ subjects, version }: SpendChartProps) {
  const [granularity, setGranularity] = useState<Granularity>("hour");
  const [by, setBy] = useState<SeriesBy>("partner");
  const [metric, setMetric] = useState<Metric>("spend");
  const [lines, setLines] = useState<{ name: string; series: Series }[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  const chosen = by === "partner" ? [{ id: "", name: "All keys" }] : subjects[by].slice(0, MAX_LINES);
  const chosenKey = chosen.map((s) => s.id).join(",");

  useEffect(() => {
    let stale = false;
    Promise.all(
      chosen.map((s) =>
        api<Series>("GET", "/partner/usage/series", { query: { by, id: by === "partner" ? null : s.id, granularity } }).then(
          (series) => ({ name: s.name, series }),
        ),
      ),
    ).then(
      (got) => {
        if (stale) return;
        setLines(got);
        setError(null);
      },
      (e) => !stale && setError(messageOf(e)),
    );
    return () => {
      stale = true;
    };
    // chosenKey stands for `chosen`
  }, [by, granularity, chosenKey, version]);

  const x = useMemo(() => (lines?.[0]?.series.points ?? []).map((p) => p.start_ms / 1000), [lines]);
  const series: ChartSeries[] = useMemo(
    () =>
      (lines ?? []).map((l) => ({
        label: l.name,
        values: l.series.points.map((p) => (metric === "spend" ? p.cost_ucr / 1_000_000 : p.requests)),
      })),
    [lines, metric],
  );
  const totalUcr = (lines ?? []).reduce((n, l) => n + ucrSum(l.series), 0);
  const totalRequests = (lines ?? []).reduce((n, l) => n + l.series.points.reduce((m, p) => m + p.requests, 0), 0);
  const period = granularity === "hour" ? "the last 24 hours" : "the last 30 days";

  return (
    <section class="card" aria-labelledby="spend-title" data-spend-chart data-total-ucr={lines ? totalUcr : undefined}>
      <div class="card-head">
        <h2 id="spend-title">Spend over time</h2>
        <div class="segmented" role="group" aria-label="Bucket size">
          {(["hour", "day"] as const).map((g) => (
            <button type="button" aria-pressed={granularity === g} onClick={() => setGranularity(g)}>
              {g === "hour" ? "By hour" : "By day"}
            </button>
          ))}
        </div>
      </div>
      <div class="toolbar">
        <label class="inline">
          <span>Lines</span>
          <select value={by} onChange={(e) => setBy(e.currentTarget.value as SeriesBy)}>
            <option value="partner">All keys together</option>
            <option value="key">Per key</option>
            <option value="customer">Per customer</option>
            <option value="model">Per model</option>
          </select>
        </label>
        <label class="inline">
          <span>Show</span>
          <select value={metric} onChange={(e) => setMetric(e.currentTarget.value as Metric)}>
            <option value="spend">Spend (credits)</option>
            <option value="requests">Requests</option>
          </select>
        </label>
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      <p class="chart-summary" data-chart-summary>
        In {period}: <strong class="money">{credits(ucrCredits(totalUcr))} credits</strong> spent over{" "}
        <strong>{count(totalRequests)}</strong> request{totalRequests === 1 ? "" : "s"}
        {by !== "partner" && chosen.length > 0 && ` (the ${chosen.length} shown)`}.
      </p>
      {by !== "partner" && chosen.length === 0 ? (
        <p class="empty">Nothing to split by yet.</p>
      ) : (
        <Chart
          x={x}
          series={series}
          unit={metric === "spend" ? "credits" : "requests"}
          label={`${metric === "spend" ? "Spend" : "Requests"} ${granularity === "hour" ? "per hour" : "per day"} in ${period}: ${credits(ucrCredits(totalUcr))} credits, ${totalRequests} requests`}
        />
      )}
    </section>
  );
}
