// Management API tokens (GET/POST/DELETE /partner/tokens): for a partner's own scripts,
// distinct from AI Gateway keys. The secret is shown once, in memory only.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { CopyButton } from "../components/CopyButton";
import { ConfirmDialog, Dialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { ago, when } from "../format";
import { messageOf } from "./nav";
import type { Page } from "../types";
import type { Token, TokenCreated } from "./types";

export function Tokens({ canManage }: { canManage: boolean }) {
  const [tokens, setTokens] = useState<Token[] | null>(null);
  const [showRevoked, setShowRevoked] = useState(false);
  const [creating, setCreating] = useState(false);
  const [name, setName] = useState("");
  const [scope, setScope] = useState<"read" | "write">("read");
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [secret, setSecret] = useState<TokenCreated | null>(null);
  const [revoking, setRevoking] = useState<Token | null>(null);

  const reload = useCallback(() => {
    api<Page<Token>>("GET", "/partner/tokens", { query: { include_revoked: showRevoked, limit: 200 } }).then(
      (p) => setTokens(p.data),
      (e) => setError(messageOf(e)),
    );
  }, [showRevoked]);
  useEffect(reload, [reload]);

  const create = async (e: Event) => {
    e.preventDefault();
    if (!name.trim()) {
      setFields({ name: "Give the token a name." });
      return;
    }
    setBusy(true);
    setFields({});
    setError(null);
    try {
      const made = await api<TokenCreated>("POST", "/partner/tokens", { body: { name: name.trim(), scope } });
      setSecret(made);
      setCreating(false);
      setName("");
      reload();
    } catch (err) {
      if (err instanceof ApiError) setFields(err.fields);
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  const revoke = async () => {
    if (!revoking) return;
    setBusy(true);
    try {
      await api<Token>("DELETE", `/partner/tokens/${revoking.id}`);
      if (secret?.token.id === revoking.id) setSecret(null);
      setRevoking(null);
      reload();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  const nameError = errorFor(fields, "name");

  return (
    <section class="card" aria-labelledby="tokens-title" data-tokens>
      <div class="card-head">
        <h2 id="tokens-title">Management API tokens</h2>
        {canManage && (
          <button type="button" class="button button-primary" onClick={() => setCreating(true)} data-open-token>
            Create token
          </button>
        )}
      </div>
      <p class="hint">
        For your own scripts and back office, on this portal's API (<code>Authorization: Bearer cgm_…</code>). They are not
        AI Gateway keys: they cannot call models.
      </p>
      {secret && (
        <div class="banner banner-success" role="status" data-token-secret-banner>
          <div class="banner-text">
            <h3 class="truncate" title={secret.token.name}>
              Token created: {secret.token.name}
            </h3>
            <p>
              <strong>Copy this secret now: it will not be shown again.</strong>
            </p>
            <div class="secret-row">
              <code class="secret" data-token-secret>
                {secret.secret}
              </code>
              <CopyButton text={secret.secret} label="Copy token" />
            </div>
          </div>
          <button type="button" class="button button-small" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      <label class="check">
        <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked(e.currentTarget.checked)} />
        <span>Show revoked</span>
      </label>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {tokens === null ? (
        <p class="muted" aria-busy="true">
          Loading…
        </p>
      ) : tokens.length === 0 ? (
        <p class="empty">No tokens.</p>
      ) : (
        <div class="table-scroll" tabIndex={0}>
          <table class="compact fixed">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Prefix</th>
                <th scope="col">Scope</th>
                <th scope="col">Last used</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tokens.map((t) => (
                <tr data-token={t.id} data-revoked={t.revoked_at ? "true" : "false"}>
                  <td>
                    <span class="truncate cell-name" title={t.name}>
                      {t.name}
                    </span>
                  </td>
                  <td>
                    <code>{t.prefix}…</code>
                  </td>
                  <td>{t.scope === "write" ? "Read & write" : "Read only"}</td>
                  <td data-last-used>{ago(t.last_used_at)}</td>
                  <td title={t.created_by}>{when(t.created_at)}</td>
                  <td>
                    {t.revoked_at ? (
                      <span class="status status-revoked">Revoked</span>
                    ) : (
                      canManage && (
                        <button type="button" class="button button-small button-danger-outline" onClick={() => setRevoking(t)} aria-label={`Revoke ${t.name}`}>
                          Revoke
                        </button>
                      )
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Dialog
        open={creating}
        title="Create a management API token"
        onClose={() => setCreating(false)}
        name="create-token"
        footer={
          <>
            <button type="button" class="button" onClick={() => setCreating(false)}>
              Cancel
            </button>
            <button type="submit" form="token-form" class="button button-primary" disabled={busy} data-create-token>
              Create token
            </button>
          </>
        }
      >
        <form id="token-form" onSubmit={create} noValidate>
          <Field label="Token name" id="token-name" error={nameError}>
            <input {...described("token-name", nameError)} maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </Field>
          <fieldset>
            <legend>Scope</legend>
            <label class="check">
              <input type="radio" name="token-scope" checked={scope === "read"} onChange={() => setScope("read")} />
              <span>Read only: reports, usage, balances</span>
            </label>
            <br />
            <label class="check">
              <input type="radio" name="token-scope" checked={scope === "write"} onChange={() => setScope("write")} />
              <span>Read & write: also keys, customers and money (not users or tokens)</span>
            </label>
          </fieldset>
        </form>
      </Dialog>
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke ${revoking?.name ?? ""}?`}
        confirmLabel="Revoke token"
        danger
        busy={busy}
        onConfirm={() => void revoke()}
        onClose={() => setRevoking(null)}
        name="revoke-token"
      >
        <p>
          <strong>This cannot be undone.</strong> Every script using this token is refused from its next request.
        </p>
      </ConfirmDialog>
    </section>
  );
}
