// The partner's Usage page: spend over time (per key, customer, model; by hour or day), the
// request log with its filters and CSV export, profit on customer billing, and each key's
// runway. Everything follows the live event stream (GET /api/v1/events): a request made
// with any key shows up without a reload.

import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../../api";
import type { Signed } from "../../App";
import { Shell } from "../../components/Shell";
import { followLive } from "../../live";
import { messageOf, partnerNav } from "../../partner/nav";
import { ProfitView } from "../../partner/ProfitView";
import { RequestLog } from "../../partner/RequestLog";
import { Runways } from "../../partner/Runways";
import { SpendChart, type Subject } from "../../partner/SpendChart";
import type { CustomerFull, RequestRow } from "../../partner/types";
import type { Key, Page, Partner } from "../../types";

export interface PartnerPageProps {
  signed: Signed;
  onSignOut: () => void;
  path: string;
}

/** A counter bumped by live events (a little later too: usage is recorded just after the event). */
export function useLiveVersion(): { version: number; state: "live" | "polling" } {
  const [version, setVersion] = useState(0);
  const [state, setState] = useState<"live" | "polling">("polling");
  useEffect(() => {
    let timers: number[] = [];
    const bump = () => setVersion((v) => v + 1);
    const stop = followLive({
      onEvent: (event) => {
        if (event === "balance") return;
        timers.forEach((t) => window.clearTimeout(t));
        timers = [300, 1500, 4000].map((ms) => window.setTimeout(bump, ms));
      },
      onReload: bump,
      onState: setState,
    });
    return () => {
      stop();
      timers.forEach((t) => window.clearTimeout(t));
    };
  }, []);
  return { version, state };
}

export function LiveBadge({ state }: { state: "live" | "polling" }) {
  return (
    <span class={`live live-${state}`} title={state === "live" ? "Updates as they happen" : "Refreshed every 5 s"} data-live={state}>
      {state === "live" ? "Live" : "Refreshing every 5 s"}
    </span>
  );
}

export function Usage({ signed, onSignOut, path }: PartnerPageProps) {
  const { version, state } = useLiveVersion();
  const [partner, setPartner] = useState<Partner | null>(null);
  const [keys, setKeys] = useState<Key[]>([]);
  const [customers, setCustomers] = useState<CustomerFull[]>([]);
  const [models, setModels] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api<Partner>("GET", "/partner").then(setPartner, (e) => setError(messageOf(e)));
    api<Page<CustomerFull>>("GET", "/partner/customers", { query: { limit: 200 } }).then(
      (p) => setCustomers(p.data),
      (e) => setError(messageOf(e)),
    );
  }, []);

  // the keys (most spent first: the lines of a per-key chart) and the models recently used
  useEffect(() => {
    api<Page<Key>>("GET", "/partner/keys", { query: { sort: "-spend", include_revoked: true, limit: 200 } }).then(
      (p) => setKeys(p.data),
      (e) => setError(messageOf(e)),
    );
    api<Page<RequestRow>>("GET", "/partner/usage/requests", { query: { limit: 200 } }).then((p) => {
      const counts = new Map<string, number>();
      for (const r of p.data) counts.set(r.model, (counts.get(r.model) ?? 0) + 1);
      const seen = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([m]) => m);
      setModels((old) => (old.join() === seen.join() ? old : seen));
    }, (e) => setError(messageOf(e)));
  }, [version]);

  const keySubjects: Subject[] = useMemo(() => keys.map((k) => ({ id: k.id, name: k.name })), [keys]);
  const customerSubjects: Subject[] = useMemo(() => customers.map((c) => ({ id: c.id, name: c.name })), [customers]);
  const subjects = useMemo(
    () => ({
      key: keys.filter((k) => k.status !== "revoked" || (k.spent?.ucr ?? 0) > 0).map((k) => ({ id: k.id, name: k.name })),
      customer: customerSubjects,
      model: models.map((m) => ({ id: m, name: m })),
    }),
    [keys, customerSubjects, models],
  );
  const names = useMemo(
    () => ({
      customer: Object.fromEntries(customers.map((c) => [c.id, c.name])),
      key: Object.fromEntries(keys.map((k) => [k.id, k.name])),
      model: {},
    }),
    [customers, keys],
  );

  return (
    <Shell user={signed.user} org={partner?.name} title="Usage" onSignOut={onSignOut} nav={partnerNav(path)}>
      <div class="page-head">
        <p class="muted">What your keys spent, who it was billed to, and how long budgets last.</p>
        <LiveBadge state={state} />
      </div>
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      <SpendChart subjects={subjects} version={version} />
      <div class="usage-grid">
        <ProfitView names={names} version={version} />
        <Runways keys={keys} version={version} />
      </div>
      <RequestLog keys={keySubjects} customers={customerSubjects} models={models} version={version} />
    </Shell>
  );
}
