// Profit on customer-billed usage, the last 30 days: revenue (AI credits at the price each
// request was billed), provider cost and margin, per customer, key or model
// (GET /partner/usage/profit). Each row's bar shows how revenue splits into cost and margin.

import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { count, credits, formatDecimal, usd } from "../format";
import { messageOf } from "./nav";
import type { Profit, ProfitBy, ProfitRow } from "./types";

function Split({ row }: { row: ProfitRow }) {
  if (row.revenue_ucr <= 0) return <span class="muted">—</span>;
  const cost = Math.min(100, Math.max(0, (row.cost_ucr / row.revenue_ucr) * 100));
  return (
    <span class="split" aria-hidden="true" title={`cost ${cost.toFixed(0)}% of revenue`}>
      <span class="split-cost" style={{ width: `${cost}%` }} />
      <span class="split-margin" style={{ width: `${100 - cost}%` }} />
    </span>
  );
}

function Row({ row, name, total = false }: { row: ProfitRow; name: string; total?: boolean }) {
  const Cell = total ? "th" : "td";
  return (
    <tr
      data-profit-row={total ? "total" : (row.id ?? "")}
      data-revenue-ucr={row.revenue_ucr}
      data-cost-ucr={row.cost_ucr}
      data-margin-ucr={row.margin_ucr}
      class={total ? "total-row" : undefined}
    >
      <Cell scope="row">
        <span class="truncate cell-name" title={name}>
          {name}
        </span>
      </Cell>
      <td class="num">{count(row.requests)}</td>
      <td class="num money" title={`${row.revenue_credits} credits ($${row.revenue_usd})`} data-revenue>
        {credits(row.revenue_credits)} <span class="muted">({usd(row.revenue_usd)})</span>
      </td>
      <td class="num money" title={`${row.cost_credits} credits ($${row.cost_usd})`} data-cost>
        {credits(row.cost_credits)} <span class="muted">({usd(row.cost_usd)})</span>
      </td>
      <td class="num money" title={`${row.margin_credits} credits ($${row.margin_usd})`} data-margin>
        {credits(row.margin_credits)} <span class="muted">({usd(row.margin_usd)})</span>
      </td>
      <td class="num" data-margin-pct>
        {row.margin_pct === null ? "—" : `${formatDecimal(row.margin_pct, 0, 2)}%`}
      </td>
      <td class="col-split">
        <Split row={row} />
      </td>
    </tr>
  );
}

export function ProfitView({ names, version }: { names: Record<ProfitBy, Record<string, string>>; version: number }) {
  const [by, setBy] = useState<ProfitBy>("customer");
  const [profit, setProfit] = useState<Profit | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let stale = false;
    api<Profit>("GET", "/partner/usage/profit", { query: { by } }).then(
      (p) => {
        if (stale) return;
        setProfit(p);
        setError(null);
      },
      (e) => !stale && setError(messageOf(e)),
    );
    return () => {
      stale = true;
    };
  }, [by, version]);

  const nameOf = (id: string | null) => (id ? (names[by][id] ?? id) : "—");
  return (
    <section class="card" aria-labelledby="profit-title" data-profit>
      <div class="card-head">
        <h2 id="profit-title">Profit on customer billing</h2>
        <label class="inline">
          <span>Per</span>
          <select value={by} onChange={(e) => setBy(e.currentTarget.value as ProfitBy)} data-profit-by>
            <option value="customer">Customer</option>
            <option value="key">Key</option>
            <option value="model">Model</option>
          </select>
        </label>
      </div>
      <p class="hint">
        The last 30 days of requests billed to customers: what they paid in AI credits (revenue), what the providers
        cost you, and what you keep. <span class="legend-swatch swatch-cost" /> cost <span class="legend-swatch swatch-margin" /> margin
      </p>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {profit === null ? (
        <p class="muted" aria-busy="true">
          Loading…
        </p>
      ) : profit.rows.length === 0 ? (
        <p class="empty">No customer-billed usage in this period.</p>
      ) : (
        <div class="table-scroll" tabIndex={0}>
          <table class="compact profit">
            <thead>
              <tr>
                <th scope="col">{by === "customer" ? "Customer" : by === "key" ? "Key" : "Model"}</th>
                <th scope="col" class="num">Requests</th>
                <th scope="col" class="num">Revenue (credits)</th>
                <th scope="col" class="num">Provider cost</th>
                <th scope="col" class="num">Margin</th>
                <th scope="col" class="num">Margin %</th>
                <th scope="col">Split</th>
              </tr>
            </thead>
            <tbody>
              {profit.rows.map((r) => (
                <Row row={r} name={nameOf(r.id)} />
              ))}
            </tbody>
            <tfoot>
              <Row row={profit.total} name="Total" total />
            </tfoot>
          </table>
        </div>
      )}
    </section>
  );
}
