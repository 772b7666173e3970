// The partner's AI Gateway page: balance, SDK quick start, the one-time secret banner, and
// the keys table with its Create Key modal and actions; kept current by the live events.

import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api";
import type { Signed } from "../App";
import { Shell } from "../components/Shell";
import { count } from "../format";
import { BalanceCard } from "../gateway/BalanceCard";
import { CreateKeyDialog } from "../gateway/CreateKey";
import { KeyActionDialog, type ActionDone } from "../gateway/KeyActions";
import { KeysTable, type Action, type Sort } from "../gateway/KeysTable";
import { QuickStart } from "../gateway/QuickStart";
import { SecretBanner, type ShownSecret } from "../gateway/SecretBanner";
import { followLive } from "../live";
import { partnerNav } from "../partner/nav";
import type { Catalog, Customer, Key, KeyCreated, KeyDetail, Page, Partner } from "../types";

const PAGE = 200;

interface KeyQuery {
  q: string;
  sort: Sort;
  includeRevoked: boolean;
}

/** Pages of GET /partner/keys until at least `atLeast` keys (or the end). */
async function loadKeys(query: KeyQuery, atLeast: number): Promise<{ keys: Key[]; cursor: string | null }> {
  const keys: Key[] = [];
  let cursor: string | null = null;
  do {
    const page: Page<Key> = await api<Page<Key>>("GET", "/partner/keys", {
      query: { q: query.q.trim(), sort: query.sort, include_revoked: query.includeRevoked, limit: PAGE, cursor },
    });
    keys.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && keys.length < atLeast);
  return { keys, cursor };
}

export function Gateway({ signed, onSignOut }: { signed: Signed; onSignOut: () => void }) {
  const [partner, setPartner] = useState<Partner | null>(null);
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  const [customers, setCustomers] = useState<Customer[]>([]);
  const [keys, setKeys] = useState<Key[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [query, setQuery] = useState<KeyQuery>({ q: "", sort: "-created", includeRevoked: false });
  const [search, setSearch] = useState("");
  const [expanded, setExpanded] = useState<Set<string>>(new Set());
  const [details, setDetails] = useState<Record<string, KeyDetail | undefined>>({});
  const [shown, setShown] = useState<ShownSecret | null>(null);
  const [creating, setCreating] = useState(false);
  const [target, setTarget] = useState<{ key: Key; action: Action } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [liveState, setLiveState] = useState<"live" | "polling">("polling");
  const shownCount = useRef(0);
  shownCount.current = keys?.length ?? 0;
  const expandedRef = useRef(expanded);
  expandedRef.current = expanded;

  const fail = (e: unknown) => setError(e instanceof Error ? e.message : String(e));

  const reloadPartner = useCallback(() => api<Partner>("GET", "/partner").then(setPartner, fail), []);
  const reloadDetails = useCallback(async (ids: Iterable<string>) => {
    for (const id of ids) {
      api<KeyDetail>("GET", `/partner/keys/${id}`).then((d) => setDetails((all) => ({ ...all, [id]: d })), fail);
    }
  }, []);
  const reloadKeys = useCallback(
    (q: KeyQuery) =>
      loadKeys(q, Math.max(shownCount.current, 1)).then(({ keys: loaded, cursor: next }) => {
        setKeys(loaded);
        setCursor(next);
        setError(null);
      }, fail),
    [],
  );

  const queryRef = useRef(query);
  queryRef.current = query;
  const reloadAll = useCallback(() => {
    reloadPartner();
    reloadKeys(queryRef.current);
    reloadDetails(expandedRef.current);
  }, [reloadPartner, reloadKeys, reloadDetails]);

  // first load: the account, the plan's models and the customers (for billing and names)
  useEffect(() => {
    reloadPartner();
    api<Catalog>("GET", "/partner/models").then(setCatalog, fail);
    api<Page<Customer>>("GET", "/partner/customers", { query: { limit: 200 } }).then((p) => setCustomers(p.data), fail);
  }, [reloadPartner]);

  useEffect(() => {
    reloadKeys(query);
  }, [query, reloadKeys]);

  // search as one types, a moment after the last key stroke
  useEffect(() => {
    const timer = window.setTimeout(() => setQuery((q) => (q.q === search ? q : { ...q, q: search })), 250);
    return () => window.clearTimeout(timer);
  }, [search]);

  // live: a request or a balance movement refreshes what they change; a key event the table.
  // keys records last-used up to a couple of seconds after the usage event (it batches its
  // writes), so look again shortly and once more a little later.
  useEffect(() => {
    let timers: number[] = [];
    const soon = (fn: () => void) => {
      timers.forEach((t) => window.clearTimeout(t));
      timers = [300, 1500, 4000, 8000].map((ms) => window.setTimeout(fn, ms));
    };
    const stop = followLive({
      onEvent: (event) => {
        if (event === "balance") reloadPartner();
        else soon(reloadAll);
      },
      onReload: reloadAll,
      onState: setLiveState,
    });
    return () => {
      stop();
      timers.forEach((t) => window.clearTimeout(t));
    };
  }, [reloadAll, reloadPartner]);

  const customerNames = useMemo(() => Object.fromEntries(customers.map((c) => [c.id, c.name])), [customers]);

  const toggle = (id: string) => {
    setExpanded((s) => {
      const next = new Set(s);
      if (next.has(id)) next.delete(id);
      else {
        next.add(id);
        reloadDetails([id]);
      }
      return next;
    });
  };

  const created = (c: KeyCreated) => {
    setCreating(false);
    if (c.secret) setShown({ keyName: c.key.name, secret: c.secret, action: "created", model: c.key.allowed_models[0] });
    setNotice(c.replayed ? `Key ${c.key.name} was already created.` : `Key ${c.key.name} created.`);
    reloadAll();
  };

  const done = (d: ActionDone) => {
    setTarget(null);
    setDetails((all) => ({ ...all, [d.key.id]: d.key }));
    if (d.action === "regenerate" && d.secret) setShown({ keyName: d.key.name, secret: d.secret, action: "regenerated", model: d.key.allowed_models[0] });
    setNotice(
      d.action === "top-up"
        ? `Key ${d.key.name} topped up.`
        : d.action === "regenerate"
          ? `Key ${d.key.name} has a new secret; the old one no longer works.`
          : `Key ${d.key.name} revoked.`,
    );
    reloadAll();
  };

  const more = async () => {
    if (!cursor) return;
    try {
      const page = await api<Page<Key>>("GET", "/partner/keys", {
        query: { q: query.q.trim(), sort: query.sort, include_revoked: query.includeRevoked, limit: PAGE, cursor },
      });
      setKeys((k) => [...(k ?? []), ...page.data]);
      setCursor(page.next_cursor);
    } catch (e) {
      fail(e);
    }
  };

  const planModels = catalog?.categories.flatMap((c) => c.models.map((m) => m.id)) ?? [];
  const exampleModel =
    shown?.model ?? (planModels.includes("gpt-4o-mini") ? "gpt-4o-mini" : (planModels[0] ?? "gpt-4o-mini"));
  return (
    <Shell
      user={signed.user}
      org={partner?.name}
      title="AI Gateway"
      onSignOut={onSignOut}
      nav={partnerNav("/partner/gateway")}
    >
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      {shown && <SecretBanner shown={shown} onDismiss={() => setShown(null)} />}
      <div class="top-grid">
        {partner ? <BalanceCard partner={partner} /> : <section class="card" aria-busy="true" />}
        <QuickStart baseUrl={partner?.gateway_base_url ?? ""} secret={shown?.secret ?? null} model={exampleModel} />
      </div>

      <section class="card keys-section" aria-labelledby="keys-title">
        <div class="card-head">
          <h2 id="keys-title">AI Gateway keys</h2>
          <span class={`live live-${liveState}`} title={liveState === "live" ? "Updates as they happen" : "Refreshed every 5 s"}>
            {liveState === "live" ? "Live" : "Refreshing every 5 s"}
          </span>
          {signed.canWrite && (
            <button
              type="button"
              class="button button-primary"
              onClick={() => {
                setNotice(null);
                setCreating(true);
              }}
              disabled={!partner}
              data-open-create
            >
              Create key
            </button>
          )}
        </div>
        <div class="toolbar">
          <label class="search">
            <span class="visually-hidden">Search keys by name or prefix</span>
            <input
              type="search"
              placeholder="Search by name or prefix"
              value={search}
              onInput={(e) => setSearch(e.currentTarget.value)}
            />
          </label>
          <label class="inline">
            <span>Sort</span>
            <select value={query.sort} onChange={(e) => setQuery({ ...query, sort: e.currentTarget.value as Sort })}>
              <option value="-created">Newest first</option>
              <option value="created">Oldest first</option>
              <option value="name">Name A–Z</option>
              <option value="-name">Name Z–A</option>
              <option value="-spend">Most spent</option>
              <option value="spend">Least spent</option>
              <option value="-last_used">Recently used</option>
              <option value="last_used">Least recently used</option>
            </select>
          </label>
          <label class="check">
            <input
              type="checkbox"
              checked={query.includeRevoked}
              onChange={(e) => setQuery({ ...query, includeRevoked: e.currentTarget.checked })}
            />
            <span>Show revoked</span>
          </label>
        </div>
        <p class="visually-hidden" role="status">
          {notice ?? ""}
        </p>
        {notice && (
          <p class="notice" data-notice>
            {notice}
          </p>
        )}
        {keys === null ? (
          <p class="muted" aria-busy="true">
            Loading keys…
          </p>
        ) : keys.length === 0 ? (
          <p class="empty">{query.q ? "No key matches this search." : "No keys yet. Create one to get started."}</p>
        ) : (
          <>
            <KeysTable
              keys={keys}
              details={details}
              expanded={expanded}
              customers={customerNames}
              sort={query.sort}
              canWrite={signed.canWrite}
              onSort={(sort) => setQuery({ ...query, sort })}
              onToggle={toggle}
              onAction={(key, action) => setTarget({ key, action })}
            />
            <p class="muted table-foot">
              {count(keys.length)} key{keys.length === 1 ? "" : "s"} shown
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
          </>
        )}
      </section>

      {partner && (
        <CreateKeyDialog
          open={creating}
          partner={partner}
          catalog={catalog}
          customers={customers}
          onCreated={created}
          onClose={() => setCreating(false)}
        />
      )}
      <KeyActionDialog target={target} onDone={done} onClose={() => setTarget(null)} />
    </Shell>
  );
}
