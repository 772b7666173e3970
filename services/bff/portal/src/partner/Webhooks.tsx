// Webhooks (/partner/webhooks): endpoints (create with the signing secret shown once, edit,
// delete), a test event, and each endpoint's recent deliveries with the dead letters and
// redeliver. Deliveries are not in the live stream: an open list is read again every 3 s.

import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../api";
import { CopyButton } from "../components/CopyButton";
import { ConfirmDialog, Dialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { ago } from "../format";
import { messageOf } from "./nav";
import type { Page } from "../types";
import { EVENT_TYPES, type Delivery, type Endpoint, type EndpointCreated } from "./types";

interface Form {
  url: string;
  description: string;
  event_types: string[];
  enabled: boolean;
}

function EndpointDialog({ editing, open, onDone, onClose }: { editing: Endpoint | null; open: boolean; onDone: (made: EndpointCreated | null) => void; onClose: () => void }) {
  const [form, setForm] = useState<Form>({ url: "", description: "", event_types: [...EVENT_TYPES], enabled: true });
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [open]);
  useEffect(() => {
    setForm(
      editing
        ? { url: editing.url, description: editing.description, event_types: editing.event_types, enabled: editing.enabled }
        : { url: "", description: "", event_types: [...EVENT_TYPES], enabled: true },
    );
    setFields({});
    setError(null);
  }, [open, editing]);

  const submit = async (e: Event) => {
    e.preventDefault();
    const local: Record<string, string> = {};
    if (!form.url.trim()) local.url = "Enter the URL that receives the events.";
    if (form.event_types.length === 0) local.event_types = "Choose at least one event.";
    setFields(local);
    if (Object.keys(local).length) return;
    setBusy(true);
    setError(null);
    try {
      const body = { ...form, url: form.url.trim() };
      if (editing) {
        await api<Endpoint>("PATCH", `/partner/webhooks/${editing.id}`, { body });
        onDone(null);
      } else {
        onDone(await api<EndpointCreated>("POST", "/partner/webhooks", { body, idempotencyKey }));
      }
    } catch (err) {
      if (err instanceof ApiError) setFields(err.fields);
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  const urlError = errorFor(fields, "url");
  const typesError = errorFor(fields, "event_types");
  const descriptionError = errorFor(fields, "description");
  return (
    <Dialog
      open={open}
      title={editing ? "Edit webhook endpoint" : "Add a webhook endpoint"}
      onClose={onClose}
      name="endpoint"
      wide
      footer={
        <>
          <button type="button" class="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" form="endpoint-form" class="button button-primary" disabled={busy} data-save-endpoint>
            {editing ? "Save" : "Add endpoint"}
          </button>
        </>
      }
    >
      <form id="endpoint-form" onSubmit={submit} noValidate>
        <Field label="Endpoint URL" id="endpoint-url" error={urlError} hint="https:// to a public host. Events are signed (Standard Webhooks).">
          <input
            {...described("endpoint-url", urlError, true)}
            type="url"
            value={form.url}
            onInput={(e) => setForm({ ...form, url: e.currentTarget.value })}
          />
        </Field>
        <Field label="Description (optional)" id="endpoint-description" error={descriptionError}>
          <input
            {...described("endpoint-description", descriptionError)}
            maxLength={500}
            value={form.description}
            onInput={(e) => setForm({ ...form, description: e.currentTarget.value })}
          />
        </Field>
        <fieldset class="event-types">
          <legend>Events</legend>
          {EVENT_TYPES.map((t) => (
            <label class="check">
              <input
                type="checkbox"
                checked={form.event_types.includes(t)}
                onChange={(e) =>
                  setForm({
                    ...form,
                    event_types: e.currentTarget.checked ? [...form.event_types, t] : form.event_types.filter((x) => x !== t),
                  })
                }
              />
              <code>{t}</code>
            </label>
          ))}
          {typesError && (
            <p class="field-error" role="alert">
              {typesError}
            </p>
          )}
        </fieldset>
        <label class="check">
          <input type="checkbox" checked={form.enabled} onChange={(e) => setForm({ ...form, enabled: e.currentTarget.checked })} />
          <span>Enabled</span>
        </label>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
      </form>
    </Dialog>
  );
}

function Deliveries({ endpoint, canWrite, version }: { endpoint: Endpoint; canWrite: boolean; version: number }) {
  const [onlyDead, setOnlyDead] = useState(false);
  const [rows, setRows] = useState<Delivery[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const timer = window.setInterval(() => setTick((t) => t + 1), 3000);
    return () => window.clearInterval(timer);
  }, []);
  useEffect(() => {
    let stale = false;
    api<Page<Delivery>>("GET", `/partner/webhooks/${endpoint.id}/deliveries`, { query: { state: onlyDead ? "dead" : null, limit: 20 } }).then(
      (p) => !stale && (setRows(p.data), setError(null)),
      (e) => !stale && setError(messageOf(e)),
    );
    return () => {
      stale = true;
    };
  }, [endpoint.id, onlyDead, tick, version]);

  const redeliver = async (d: Delivery) => {
    try {
      await api<Delivery>("POST", `/partner/webhooks/${endpoint.id}/deliveries/${d.id}/redeliver`);
      setTick((t) => t + 1);
    } catch (e) {
      setError(messageOf(e));
    }
  };
  return (
    <div class="deliveries" data-deliveries={endpoint.id}>
      <div class="toolbar">
        <h3>Recent deliveries</h3>
        <div class="segmented" role="group" aria-label="Which deliveries">
          <button type="button" aria-pressed={!onlyDead} onClick={() => setOnlyDead(false)}>
            All
          </button>
          <button type="button" aria-pressed={onlyDead} onClick={() => setOnlyDead(true)} data-dead-letters>
            Dead letters
          </button>
        </div>
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {rows === null ? (
        <p class="muted">Loading…</p>
      ) : rows.length === 0 ? (
        <p class="empty">{onlyDead ? "No dead letters." : "No deliveries yet. Send a test event."}</p>
      ) : (
        <div class="table-scroll" tabIndex={0}>
          <table class="compact">
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">State</th>
                <th scope="col">Attempts</th>
                <th scope="col">Last answer</th>
                <th scope="col">When</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((d) => (
                <tr data-delivery={d.id} data-event-type={d.event_type} data-state={d.state}>
                  <td>
                    <code>{d.event_type}</code>
                  </td>
                  <td>
                    <span class={d.state === "succeeded" ? "status status-active" : d.state === "dead" ? "status status-revoked" : "status"}>
                      {d.state === "succeeded" ? "Delivered" : d.state === "dead" ? "Dead letter" : "Pending"}
                    </span>
                  </td>
                  <td>
                    {d.attempts}
                    {d.generation > 0 ? ` (redelivered ×${d.generation})` : ""}
                  </td>
                  <td class="break">{d.last_status_code ? `HTTP ${d.last_status_code}` : d.last_error || "—"}</td>
                  <td title={d.created_at}>{ago(d.created_at)}</td>
                  <td>
                    {canWrite && d.state !== "pending" && (
                      <button type="button" class="button button-small" onClick={() => void redeliver(d)}>
                        Redeliver
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

export function Webhooks({ canWrite }: { canWrite: boolean }) {
  const [endpoints, setEndpoints] = useState<Endpoint[] | null>(null);
  const [dialog, setDialog] = useState<{ editing: Endpoint | null } | null>(null);
  const [secret, setSecret] = useState<{ url: string; secret: string } | null>(null);
  const [deleting, setDeleting] = useState<Endpoint | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const reload = useCallback(() => {
    api<Page<Endpoint>>("GET", "/partner/webhooks", { query: { limit: 200 } }).then(
      (p) => setEndpoints(p.data),
      (e) => setError(messageOf(e)),
    );
  }, []);
  useEffect(reload, [reload]);

  const test = async (ep: Endpoint) => {
    setError(null);
    try {
      await api<Delivery>("POST", `/partner/webhooks/${ep.id}/test`);
      setNotice("Test event sent: follow it in the deliveries.");
      setOpen(ep.id);
      setVersion((v) => v + 1);
    } catch (e) {
      setError(messageOf(e));
    }
  };
  const remove = async () => {
    if (!deleting) return;
    setBusy(true);
    try {
      await api("DELETE", `/partner/webhooks/${deleting.id}`);
      setDeleting(null);
      setNotice("Endpoint deleted.");
      reload();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card" aria-labelledby="webhooks-title" data-webhooks>
      <div class="card-head">
        <h2 id="webhooks-title">Webhooks</h2>
        {canWrite && (
          <button type="button" class="button button-primary" onClick={() => setDialog({ editing: null })} data-open-endpoint>
            Add endpoint
          </button>
        )}
      </div>
      <p class="hint">Your systems hear about budgets running low, keys exhausted or suspended, auto top-ups and customer keys as they happen.</p>
      {secret && (
        <div class="banner banner-success" role="status" data-webhook-secret-banner>
          <div class="banner-text">
            <h3 class="truncate" title={secret.url}>
              Endpoint added: {secret.url}
            </h3>
            <p>
              <strong>Copy the signing secret now: it will not be shown again.</strong> Verify each webhook's signature with it.
            </p>
            <div class="secret-row">
              <code class="secret" data-webhook-secret>
                {secret.secret}
              </code>
              <CopyButton text={secret.secret} label="Copy signing secret" />
            </div>
          </div>
          <button type="button" class="button button-small" onClick={() => setSecret(null)}>
            Done
          </button>
        </div>
      )}
      <p class="visually-hidden" role="status">
        {notice ?? ""}
      </p>
      {notice && <p class="notice">{notice}</p>}
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {endpoints === null ? (
        <p class="muted" aria-busy="true">
          Loading…
        </p>
      ) : endpoints.length === 0 ? (
        <p class="empty">No endpoints yet.</p>
      ) : (
        <ul class="endpoints">
          {endpoints.map((ep) => (
            <li class="endpoint" data-endpoint={ep.id}>
              <div class="endpoint-head">
                <div class="endpoint-main">
                  <code class="break endpoint-url">{ep.url}</code>
                  {ep.description && <p class="muted break">{ep.description}</p>}
                  <p class="hint">
                    {ep.enabled ? <span class="status status-active">Enabled</span> : <span class="status">Disabled</span>} {ep.event_types.length} event
                    {ep.event_types.length === 1 ? "" : "s"}: {ep.event_types.join(", ")}
                  </p>
                </div>
                <div class="actions">
                  <button type="button" class="button button-small" aria-expanded={open === ep.id} onClick={() => setOpen(open === ep.id ? null : ep.id)} data-toggle-deliveries>
                    Deliveries
                  </button>
                  {canWrite && (
                    <>
                      <button type="button" class="button button-small" onClick={() => void test(ep)} data-send-test>
                        Send test
                      </button>
                      <button type="button" class="button button-small" onClick={() => setDialog({ editing: ep })} data-edit-endpoint>
                        Edit
                      </button>
                      <button type="button" class="button button-small button-danger-outline" onClick={() => setDeleting(ep)} data-delete-endpoint>
                        Delete
                      </button>
                    </>
                  )}
                </div>
              </div>
              {open === ep.id && <Deliveries endpoint={ep} canWrite={canWrite} version={version} />}
            </li>
          ))}
        </ul>
      )}
      <EndpointDialog
        open={dialog !== null}
        editing={dialog?.editing ?? null}
        onClose={() => setDialog(null)}
        onDone={(made) => {
          setDialog(null);
          if (made?.secret) setSecret({ url: made.endpoint.url, secret: made.secret });
          setNotice(made ? "Endpoint added." : "Endpoint saved.");
          reload();
        }}
      />
      <ConfirmDialog
        open={deleting !== null}
        title="Delete this endpoint?"
        confirmLabel="Delete endpoint"
        danger
        busy={busy}
        onConfirm={() => void remove()}
        onClose={() => setDeleting(null)}
        name="delete-endpoint"
      >
        <p class="break">
          <strong>{deleting?.url}</strong> stops receiving events, and its delivery history is deleted. This cannot be undone.
        </p>
      </ConfirmDialog>
    </section>
  );
}
