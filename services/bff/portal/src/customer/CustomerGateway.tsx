// The customer's AI Gateway page: quick start, its own keys (create, revoke), the one-time
// secret banner, and its usage chart.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { ConfirmDialog } from "../components/Dialog";
import { QuickStart } from "../gateway/QuickStart";
import { SecretBanner, type ShownSecret } from "../gateway/SecretBanner";
import type { Catalog, Key, KeyCreated, Page } from "../types";
import { CreateOwnKeyDialog } from "./CreateOwnKey";
import { OwnKeysTable } from "./OwnKeys";
import type { CustomerSelf } from "./types";
import { UsageCard } from "./UsageCard";

async function allKeys(): Promise<Key[]> {
  const keys: Key[] = [];
  let cursor: string | null = null;
  do {
    const page: Page<Key> = await api<Page<Key>>("GET", "/customer/keys", { query: { limit: 200, cursor } });
    keys.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && keys.length < 2000);
  return keys;
}

export function CustomerGateway({ me, tick, onChanged }: { me: CustomerSelf; tick: number; onChanged: () => void }) {
  const [catalog, setCatalog] = useState<Catalog | null>(null);
  const [keys, setKeys] = useState<Key[] | null>(null);
  const [shown, setShown] = useState<ShownSecret | null>(null);
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<Key | null>(null);
  const [busy, setBusy] = useState(false);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const fail = (e: unknown) => setError(e instanceof Error ? e.message : String(e));
  const reloadKeys = useCallback(() => allKeys().then(setKeys, fail), []);

  useEffect(() => {
    api<Catalog>("GET", "/customer/models").then(setCatalog, fail);
  }, []);
  useEffect(() => {
    reloadKeys();
  }, [tick, reloadKeys]);

  const created = (c: KeyCreated) => {
    setCreating(false);
    if (c.secret) setShown({ keyName: c.key.name, secret: c.secret, action: "created", model: c.key.allowed_models[0] });
    setNotice(c.replayed ? `Key ${c.key.name} was already created.` : `Key ${c.key.name} created.`);
    reloadKeys();
    onChanged();
  };

  const revoke = async () => {
    if (!revoking || busy) return;
    setBusy(true);
    setRevokeError(null);
    try {
      await api("POST", `/customer/keys/${revoking.id}/revoke`);
      setNotice(`Key ${revoking.name} revoked.`);
      if (shown && keys?.find((k) => k.id === revoking.id)?.name === shown.keyName) setShown(null);
      setRevoking(null);
      reloadKeys();
      onChanged();
    } catch (e) {
      setRevokeError(e instanceof ApiError || e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const planModels = catalog?.categories.flatMap((c) => c.models.map((m) => m.id)) ?? [];
  const model = shown?.model ?? (planModels.includes("gpt-4o-mini") ? "gpt-4o-mini" : (planModels[0] ?? "gpt-4o-mini"));
  const live = (keys ?? []).filter((k) => k.status !== "revoked");

  return (
    <>
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      {shown && <SecretBanner shown={shown} onDismiss={() => setShown(null)} />}
      <div class="top-grid">
        <QuickStart baseUrl={me.gateway_base_url} secret={shown?.secret ?? null} model={model} />
        <UsageCard refresh={tick} />
      </div>
      <section class="card keys-section" aria-labelledby="own-keys-title">
        <div class="card-head">
          <h2 id="own-keys-title">Your AI Gateway keys</h2>
          <button
            type="button"
            class="button button-primary"
            onClick={() => {
              setNotice(null);
              setCreating(true);
            }}
            data-open-create
          >
            Create key
          </button>
        </div>
        <p class="hint">Pay as you go: requests made with these keys are billed to your AI credits.</p>
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
        ) : live.length === 0 ? (
          <p class="empty">No keys yet. Create one to get started.</p>
        ) : (
          <OwnKeysTable
            keys={live}
            onRevoke={(k) => {
              setRevokeError(null);
              setRevoking(k);
            }}
          />
        )}
      </section>
      <CreateOwnKeyDialog open={creating} catalog={catalog} onCreated={created} onClose={() => setCreating(false)} />
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke ${revoking?.name ?? "key"}?`}
        confirmLabel="Revoke key"
        danger
        busy={busy}
        error={revokeError}
        onConfirm={revoke}
        onClose={() => setRevoking(null)}
        name="revoke-own-key"
      >
        <p>
          The key stops working at once, for every app that uses it. <strong>This cannot be undone</strong>: create a new
          key if you need one again.
        </p>
      </ConfirmDialog>
    </>
  );
}
