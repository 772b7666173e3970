// The request log: GET /partner/usage/requests, newest first, filtered by key, customer,
// model and outcome, a page at a time ("load more"); the same filters as a CSV download.
// A live usage event brings the newest rows in at the top.

import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../api";
import { ago, count, credits, formatDecimal } from "../format";
import { messageOf } from "./nav";
import type { Outcome, RequestRow } from "./types";
import type { Page } from "../types";
import type { Subject } from "./SpendChart";

const PAGE = 50;
const OUTCOMES: Record<Outcome, string> = {
  ok: "OK",
  upstream_error: "Provider error",
  client_disconnected: "Client left",
  unknown: "Unknown",
};

interface Filters {
  key_id: string;
  customer_id: string;
  model: string;
  outcome: string;
}

export interface RequestLogProps {
  keys: Subject[];
  customers: Subject[];
  models: string[];
  version: number;
}

export function RequestLog({ keys, customers, models, version }: RequestLogProps) {
  const [filters, setFilters] = useState<Filters>({ key_id: "", customer_id: "", model: "", outcome: "" });
  const [rows, setRows] = useState<RequestRow[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const filtersRef = useRef(filters);
  filtersRef.current = filters;

  // a change of filters: the first page again
  useEffect(() => {
    let stale = false;
    setRows(null);
    api<Page<RequestRow>>("GET", "/partner/usage/requests", { query: { ...filters, limit: PAGE } }).then(
      (p) => {
        if (stale) return;
        setRows(p.data);
        setCursor(p.next_cursor);
        setError(null);
      },
      (e) => !stale && setError(messageOf(e)),
    );
    return () => {
      stale = true;
    };
  }, [filters]);

  // live: the newest page again, its new rows on top of what is shown
  useEffect(() => {
    if (version === 0) return;
    const asked = filtersRef.current;
    api<Page<RequestRow>>("GET", "/partner/usage/requests", { query: { ...asked, limit: PAGE } }).then((p) => {
      if (filtersRef.current !== asked) return;
      setRows((shown) => {
        const have = new Set((shown ?? []).map((r) => r.request_id));
        const fresh = p.data.filter((r) => !have.has(r.request_id));
        return fresh.length ? [...fresh, ...(shown ?? [])] : shown;
      });
    }, (e) => setError(messageOf(e)));
  }, [version]);

  const more = () => {
    if (!cursor) return;
    api<Page<RequestRow>>("GET", "/partner/usage/requests", { query: { ...filters, limit: PAGE, cursor } }).then((p) => {
      setRows((shown) => [...(shown ?? []), ...p.data]);
      setCursor(p.next_cursor);
    }, (e) => setError(messageOf(e)));
  };

  const csv = new URL("/api/v1/partner/usage/requests", window.location.origin);
  csv.searchParams.set("format", "csv");
  for (const [name, value] of Object.entries(filters)) if (value) csv.searchParams.set(name, value);

  const keyName = Object.fromEntries(keys.map((k) => [k.id, k.name]));
  const customerName = Object.fromEntries(customers.map((c) => [c.id, c.name]));
  const set = (name: keyof Filters) => (e: Event) =>
    setFilters({ ...filters, [name]: (e.currentTarget as HTMLSelectElement).value });

  return (
    <section class="card" aria-labelledby="log-title" data-request-log>
      <div class="card-head">
        <h2 id="log-title">Request log</h2>
        <a class="button button-small" href={csv.pathname + csv.search} download data-csv>
          Export CSV
        </a>
      </div>
      <div class="toolbar filters">
        <label class="inline">
          <span>Key</span>
          <select value={filters.key_id} onChange={set("key_id")} data-filter="key">
            <option value="">All keys</option>
            {keys.map((k) => (
              <option value={k.id}>{k.name}</option>
            ))}
          </select>
        </label>
        <label class="inline">
          <span>Customer</span>
          <select value={filters.customer_id} onChange={set("customer_id")} data-filter="customer">
            <option value="">All customers</option>
            {customers.map((c) => (
              <option value={c.id}>{c.name}</option>
            ))}
          </select>
        </label>
        <label class="inline">
          <span>Model</span>
          <select value={filters.model} onChange={set("model")} data-filter="model">
            <option value="">All models</option>
            {models.map((m) => (
              <option value={m}>{m}</option>
            ))}
          </select>
        </label>
        <label class="inline">
          <span>Outcome</span>
          <select value={filters.outcome} onChange={set("outcome")} data-filter="outcome">
            <option value="">Any outcome</option>
            {Object.entries(OUTCOMES).map(([v, label]) => (
              <option value={v}>{label}</option>
            ))}
          </select>
        </label>
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {rows === null ? (
        <p class="muted" aria-busy="true">
          Loading requests…
        </p>
      ) : rows.length === 0 ? (
        <p class="empty">No request matches. Requests made with your keys appear here as they happen.</p>
      ) : (
        <div class="table-scroll" tabIndex={0}>
          <table class="compact log">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Key</th>
                <th scope="col">Customer</th>
                <th scope="col">Model</th>
                <th scope="col" class="num">Tokens in / out</th>
                <th scope="col" class="num">Cost (credits)</th>
                <th scope="col" class="num">AI credits billed</th>
                <th scope="col">Outcome</th>
                <th scope="col" class="num">Latency</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr data-request-row={r.request_id} data-key-id={r.key_id}>
                  <td title={r.time}>{ago(r.time)}</td>
                  <td>
                    <span class="truncate cell-name" title={keyName[r.key_id] ?? r.key_id}>
                      {keyName[r.key_id] ?? r.key_id}
                    </span>
                  </td>
                  <td>
                    <span class="truncate cell-name" title={r.customer_id ? (customerName[r.customer_id] ?? r.customer_id) : ""}>
                      {r.customer_id ? (customerName[r.customer_id] ?? r.customer_id) : "—"}
                    </span>
                  </td>
                  <td>{r.model}</td>
                  <td class="num">
                    {count(r.input_tokens)} / {count(r.output_tokens)}
                    {r.source === "estimated" && <span class="badge badge-muted" title="The provider reported no token counts">est.</span>}
                  </td>
                  <td class="num money" title={`${r.cost_credits} credits`} data-cost-ucr={r.cost_ucr}>
                    {credits(r.cost_credits)}
                  </td>
                  <td class="num money" title={`${r.ai_credits} AI credits`}>
                    {r.ai_credits_uai ? formatDecimal(r.ai_credits, 0, 6) : "—"}
                  </td>
                  <td>
                    <span class={r.outcome === "ok" ? "status status-active" : "status status-suspended"}>{OUTCOMES[r.outcome]}</span>
                  </td>
                  <td class="num">{count(r.latency_ms)} ms</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {rows && rows.length > 0 && (
        <p class="muted table-foot">
          {count(rows.length)} request{rows.length === 1 ? "" : "s"} shown
          {cursor && (
            <>
              {" "}
              ·{" "}
              <button type="button" class="link" onClick={more}>
                Load more
              </button>
            </>
          )}
        </p>
      )}
    </section>
  );
}
