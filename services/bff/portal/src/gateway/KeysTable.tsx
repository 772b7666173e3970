// The AI Gateway Keys table: budget vs spend as a bar, rows that expand to what the budget
// holds right now (GET /partner/keys/{id}), and the actions of each key.

import { Fragment, type ComponentChildren } from "preact";
import { ago, spentPercent, when } from "../format";
import { Credits, Usd } from "../components/Money";
import type { Key, KeyDetail } from "../types";

export type SortField = "name" | "created" | "spend" | "last_used";
export type Sort = SortField | `-${SortField}`;
export type Action = "top-up" | "regenerate" | "revoke";

const COLUMNS: { label: string; sort?: SortField; className?: string }[] = [
  { label: "Name", sort: "name" },
  { label: "Prefix" },
  { label: "Budget vs spend", sort: "spend" },
  { label: "Models" },
  { label: "Status" },
  { label: "Last used", sort: "last_used" },
  { label: "Actions", className: "col-actions" },
];

export interface KeysTableProps {
  keys: Key[];
  details: Record<string, KeyDetail | undefined>;
  expanded: Set<string>;
  customers: Record<string, string>;
  sort: Sort;
  canWrite: boolean;
  onSort: (sort: Sort) => void;
  onToggle: (id: string) => void;
  onAction: (key: Key, action: Action) => void;
}

function ariaSort(sort: Sort, field: SortField | undefined): "ascending" | "descending" | undefined {
  if (!field) return undefined;
  if (sort === field) return "ascending";
  if (sort === `-${field}`) return "descending";
  return undefined;
}

function BudgetBar({ k }: { k: Key }) {
  if (!k.budget) return <span class="muted">Pay as you go</span>;
  const percent = spentPercent(k.spent, k.budget);
  return (
    <div class="budget" data-budget>
      <div
        class={percent >= 90 ? "bar bar-high" : "bar"}
        role="meter"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(percent)}
        aria-label={`${Math.round(percent)}% of the budget spent`}
      >
        <span style={{ width: `${percent}%` }} />
      </div>
      <span class="budget-text" data-spent-ucr={k.spent?.ucr}>
        <Credits value={k.spent} unit={false} /> / <Credits value={k.budget} />
      </span>
    </div>
  );
}

function Details({ k, d, customers }: { k: Key; d: KeyDetail | undefined; customers: Record<string, string> }) {
  const rows: [string, ComponentChildren][] = [];
  if (k.budget) {
    rows.push(["Reserved (in flight)", <Credits value={d?.reserved ?? null} exact />]);
    rows.push(["Used", <Credits value={d?.used ?? k.spent} exact />]);
    rows.push(["Remaining", <Credits value={d?.remaining ?? k.remaining} exact />]);
    if (d?.refunded) rows.push(["Refunded", <Credits value={d.refunded} exact />]);
  }
  const b = k.billing;
  rows.push(["Billed to", b ? customers[b.customer_id] ?? b.customer_id : "Not billed to a customer"]);
  if (b) {
    rows.push(["Profit multiplier", `× ${b.profit_multiplier}`]);
    rows.push(["Credit price", `${b.price_per_ai_credit_cents} ¢ per AI credit`]);
    if (b.floor_usd_per_mtok) rows.push(["Minimum cost", `$${b.floor_usd_per_mtok} per 1M tokens`]);
  }
  const rl = k.rate_limits;
  rows.push([
    "Rate limits",
    rl.rpm || rl.tpm ? `${rl.rpm ? `${rl.rpm} requests/min` : "any requests/min"}, ${rl.tpm ? `${rl.tpm} tokens/min` : "any tokens/min"}` : "None",
  ]);
  rows.push(["Expires", when(k.expires_at, "Never")]);
  const t = k.auto_topup;
  rows.push([
    "Auto top-up",
    t.enabled ? `Below $${t.threshold_usd ?? "?"}, add $${t.amount_usd ?? "?"}` + (t.last_error ? ` (last failed: ${t.last_error})` : "") : "Off",
  ]);
  rows.push(["Allowed domains", k.allowed_domains.length ? k.allowed_domains.join(", ") : "Any"]);
  if (k.description) rows.push(["Description", k.description]);
  rows.push(["Created", when(k.created_at)]);
  if (d?.min_request) rows.push(["Cheapest request", <Usd value={d.min_request} />]);
  return (
    <dl class="details" data-details={k.id}>
      {rows.map(([term, value]) => (
        <div>
          <dt>{term}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

export function KeysTable(props: KeysTableProps) {
  const { keys, sort } = props;
  const header = (c: (typeof COLUMNS)[number]) => {
    if (!c.sort) return c.label;
    const field = c.sort;
    const next: Sort = sort === field ? `-${field}` : field;
    return (
      <button type="button" class="sort" onClick={() => props.onSort(next)}>
        {c.label}
        <span aria-hidden="true">{sort === field ? " ▲" : sort === `-${field}` ? " ▼" : ""}</span>
      </button>
    );
  };
  return (
    <table class="keys" data-keys-table>
      <thead>
        <tr>
          {COLUMNS.map((c) => (
            <th scope="col" class={c.className} aria-sort={ariaSort(sort, c.sort)}>
              {header(c)}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {keys.map((k) => {
          const open = props.expanded.has(k.id);
          const live = k.status !== "revoked";
          return (
            <Fragment key={k.id}>
              <tr data-key-row={k.id} data-status={k.status} class={open ? "row-open" : undefined}>
                <td data-label="Name" class="col-name">
                  <button
                    type="button"
                    class="expand"
                    aria-expanded={open}
                    aria-controls={`details-${k.id}`}
                    onClick={() => props.onToggle(k.id)}
                    title={k.name}
                  >
                    <span aria-hidden="true" class="chevron">
                      {open ? "▾" : "▸"}
                    </span>
                    <span class="truncate key-name">{k.name}</span>
                  </button>
                  {k.kind === "customer" && <span class="badge badge-muted">customer key</span>}
                </td>
                <td data-label="Prefix">
                  <code>{k.prefix}…</code>
                </td>
                <td data-label="Budget vs spend">
                  <BudgetBar k={k} />
                </td>
                <td data-label="Models" class="col-models">
                  <span class="truncate" title={k.allowed_models.join(", ")}>
                    {k.allowed_models.join(", ")}
                  </span>
                </td>
                <td data-label="Status">
                  <span class={`status status-${k.status}`} title={k.status_reason ?? undefined}>
                    {k.status}
                  </span>
                </td>
                <td data-label="Last used" data-last-used={k.last_used_at ?? ""}>
                  <span title={when(k.last_used_at)}>{ago(k.last_used_at)}</span>
                </td>
                <td data-label="Actions" class="col-actions">
                  {props.canWrite && live && (
                    <div class="actions">
                      {k.kind === "partner" && (
                        <button type="button" class="button button-small" onClick={() => props.onAction(k, "top-up")}>
                          Top Up
                        </button>
                      )}
                      <button type="button" class="button button-small" onClick={() => props.onAction(k, "regenerate")}>
                        Regenerate
                      </button>
                      <button
                        type="button"
                        class="button button-small button-danger-outline"
                        onClick={() => props.onAction(k, "revoke")}
                      >
                        Revoke
                      </button>
                    </div>
                  )}
                </td>
              </tr>
              {open && (
                <tr class="details-row" id={`details-${k.id}`}>
                  <td colSpan={COLUMNS.length}>
                    <Details k={k} d={props.details[k.id]} customers={props.customers} />
                  </td>
                </tr>
              )}
            </Fragment>
          );
        })}
      </tbody>
    </table>
  );
}
