// The platform admin's pages: partners (paged, searchable; create, change tier, suspend /
// resume, deposit credits) and the model catalog (read-only), on /api/v1/admin.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { type AdminAction, CreatePartnerDialog, PartnerActionDialog } from "../admin/PartnerDialogs";
import type { AdminPartner } from "../admin/types";
import { Credits, Usd } from "../components/Money";
import { Shell } from "../components/Shell";
import { when } from "../format";
import { usePath } from "../router";
import type { Catalog, Page, User } from "../types";

const PAGE = 50;

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function Partners() {
  const [rows, setRows] = useState<AdminPartner[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [search, setSearch] = useState("");
  const [q, setQ] = useState("");
  const [status, setStatus] = useState("");
  const [creating, setCreating] = useState(false);
  const [target, setTarget] = useState<{ partner: AdminPartner; action: AdminAction } | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async (after: string | null) => {
    try {
      const page = await api<Page<AdminPartner>>("GET", "/admin/partners", { query: { q, status, limit: PAGE, cursor: after } });
      setRows((r) => (after ? [...(r ?? []), ...page.data] : page.data));
      setCursor(page.next_cursor);
      setError(null);
    } catch (e) {
      setError(messageOf(e));
    }
  }, [q, status]);

  useEffect(() => {
    void load(null);
  }, [load]);
  useEffect(() => {
    const t = window.setTimeout(() => setQ(search.trim()), 250);
    return () => window.clearTimeout(t);
  }, [search]);

  const replace = (p: AdminPartner) => setRows((r) => (r ?? []).map((x) => (x.id === p.id ? p : x)));
  const act = (partner: AdminPartner, action: AdminAction) => {
    setNotice(null);
    setTarget({ partner, action });
  };

  return (
    <>
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      <section class="card" aria-labelledby="partners-title">
        <div class="card-head">
          <h2 id="partners-title">Partners</h2>
          <button type="button" class="button button-primary" onClick={() => setCreating(true)} data-open-create-partner>
            Create partner
          </button>
        </div>
        <div class="toolbar">
          <label class="search">
            <span class="visually-hidden">Search partners by name</span>
            <input type="search" placeholder="Search by name" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
          </label>
          <label class="inline">
            <span>Status</span>
            <select value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
              <option value="">All</option>
              <option value="active">Active</option>
              <option value="suspended">Suspended</option>
            </select>
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
        {rows === null ? (
          <p class="muted" aria-busy="true">
            Loading partners…
          </p>
        ) : rows.length === 0 ? (
          <p class="empty">{q || status ? "No partner matches." : "No partners yet."}</p>
        ) : (
          <div class="table-scroll" tabIndex={0}>
            <table class="keys partners">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Tier</th>
                  <th scope="col">Status</th>
                  <th scope="col">Balance</th>
                  <th scope="col">Created</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((p) => (
                  <tr data-partner-row={p.id} data-status={p.status}>
                    <td class="col-name" data-label="Name">
                      <span class="truncate key-name" title={p.name}>
                        {p.name}
                      </span>
                      {p.external_ref && (
                        <span class="hint truncate" title={p.external_ref}>
                          ref {p.external_ref}
                        </span>
                      )}
                    </td>
                    <td data-label="Tier" data-tier>
                      <span>
                        {p.tier} <span class="muted">({(Number(p.fee_rate) * 100).toFixed(0)}% fee)</span>
                      </span>
                    </td>
                    <td data-label="Status">
                      <span class={`status status-${p.status}`}>{p.status}</span>
                    </td>
                    <td data-label="Balance" data-balance>
                      <span class="break">
                        <Credits value={p.balance} />
                        <span class="hint">
                          {" "}
                          <Usd value={p.balance} />
                        </span>
                      </span>
                    </td>
                    <td data-label="Created">{when(p.created_at, "—")}</td>
                    <td data-label="Actions">
                      <div class="actions">
                        <button type="button" class="button button-small" onClick={() => act(p, "deposit")} aria-label={`Deposit credits into ${p.name}`}>
                          Deposit
                        </button>
                        <button type="button" class="button button-small" onClick={() => act(p, "tier")} aria-label={`Change the tier of ${p.name}`}>
                          Tier
                        </button>
                        {p.status === "active" ? (
                          <button type="button" class="button button-small button-danger-outline" onClick={() => act(p, "suspend")} aria-label={`Suspend ${p.name}`}>
                            Suspend
                          </button>
                        ) : (
                          <button type="button" class="button button-small" onClick={() => act(p, "resume")} aria-label={`Resume ${p.name}`}>
                            Resume
                          </button>
                        )}
                      </div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {rows && (
          <p class="muted table-foot">
            {rows.length} partner{rows.length === 1 ? "" : "s"} shown
            {cursor && (
              <>
                {" "}
                ·{" "}
                <button type="button" class="link" onClick={() => void load(cursor)}>
                  Load more
                </button>
              </>
            )}
          </p>
        )}
      </section>
      <CreatePartnerDialog
        open={creating}
        onClose={() => setCreating(false)}
        onCreated={(p) => {
          setCreating(false);
          setNotice(`Partner ${p.name} created. Invite its first owner through the API (POST /admin/partners/{id}/invites).`);
          setRows((r) => [...(r ?? []).filter((x) => x.id !== p.id), p]);
        }}
      />
      <PartnerActionDialog
        target={target}
        onClose={() => setTarget(null)}
        onDone={(p, message) => {
          setTarget(null);
          replace(p);
          setNotice(message);
        }}
      />
    </>
  );
}

function CatalogPage() {
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<Catalog>("GET", "/admin/catalog").then(setCatalog, (e) => setError(messageOf(e)));
  }, []);
  if (error)
    return (
      <p class="banner banner-error" role="alert">
        {error}
      </p>
    );
  if (!catalog)
    return (
      <p class="muted" aria-busy="true">
        Loading the catalog…
      </p>
    );
  return (
    <section class="card" aria-labelledby="catalog-title" data-catalog>
      <div class="card-head">
        <h2 id="catalog-title">Model catalog</h2>
        <span class="badge">version {catalog.catalog_version}</span>
      </div>
      <p class="hint">Read-only: the catalog is services/keys/cg_keys/catalog.yaml. Prices are USD per 1M tokens.</p>
      {catalog.categories.map((group) => (
        <div class="table-scroll" tabIndex={0}>
          <table class="compact catalog">
            <caption>{group.label}</caption>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Provider</th>
                <th scope="col">Input</th>
                <th scope="col">Output</th>
              </tr>
            </thead>
            <tbody>
              {group.models.map((m) => (
                <tr data-model={m.id}>
                  <td class="break">{m.id}</td>
                  <td>{m.provider}</td>
                  <td>${m.input_usd_per_mtok}</td>
                  <td>${m.output_usd_per_mtok}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
    </section>
  );
}

export function AdminHome({ user, onSignOut }: { user: User; onSignOut: () => void }) {
  const path = usePath();
  const onCatalog = path.startsWith("/admin/catalog");
  const nav = [
    { label: "Partners", href: "/admin", current: !onCatalog },
    { label: "Catalog", href: "/admin/catalog", current: onCatalog },
  ];
  return (
    <Shell user={user} title={onCatalog ? "Model catalog" : "Partners"} onSignOut={onSignOut} nav={nav}>
      {onCatalog ? <CatalogPage /> : <Partners />}
    </Shell>
  );
}
