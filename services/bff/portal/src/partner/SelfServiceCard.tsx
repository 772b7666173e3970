// Customer Self-Service API Keys (GET/PUT /partner/self-service): the master switch, the AI
// Gateway menu for new customers (and, confirmed, for every existing one), the terms
// customer-created keys bill at, and the deposit rule in plain words.

import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { ConfirmDialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { credits, formatDecimal, usd } from "../format";
import { messageOf } from "./nav";
import type { SelfService } from "./types";

interface Form {
  enabled: boolean;
  apply_to_new_customers: boolean;
  default_profit_multiplier: string;
  ai_credit_price_cents: string;
  apply_to_existing_customers: boolean;
}

export function SelfServiceCard({ canWrite, onSaved }: { canWrite: boolean; onSaved: () => void }) {
  const [saved, setSaved] = useState<SelfService | null>(null);
  const [form, setForm] = useState<Form | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);

  const load = (s: SelfService) => {
    setSaved(s);
    setForm({
      enabled: s.enabled,
      apply_to_new_customers: s.apply_to_new_customers,
      default_profit_multiplier: s.default_profit_multiplier,
      ai_credit_price_cents: s.ai_credit_price_cents,
      apply_to_existing_customers: false,
    });
  };
  useEffect(() => {
    api<SelfService>("GET", "/partner/self-service").then(load, (e) => setError(messageOf(e)));
  }, []);

  if (!form || !saved) {
    return (
      <section class="card" aria-labelledby="ss-title" aria-busy="true">
        <h2 id="ss-title">Customer Self-Service API Keys</h2>
        {error && <p class="form-error">{error}</p>}
      </section>
    );
  }

  const save = async () => {
    setBusy(true);
    setError(null);
    setFields({});
    setNotice(null);
    try {
      const s = await api<SelfService>("PUT", "/partner/self-service", { body: form });
      load(s);
      setConfirming(false);
      setNotice(form.apply_to_existing_customers ? "Saved, and the AI Gateway menu is on for every existing customer." : "Saved.");
      onSaved();
    } catch (e) {
      if (e instanceof ApiError) setFields(e.fields);
      setError(messageOf(e));
      setConfirming(false);
    } finally {
      setBusy(false);
    }
  };
  const submit = (e: Event) => {
    e.preventDefault();
    if (form.apply_to_existing_customers) setConfirming(true);
    else void save();
  };
  const deposit = saved.deposit_per_key;
  const multiplierError = errorFor(fields, "default_profit_multiplier");
  const centsError = errorFor(fields, "ai_credit_price_cents");
  const check = (name: "enabled" | "apply_to_new_customers" | "apply_to_existing_customers") => (e: Event) =>
    setForm({ ...form, [name]: (e.currentTarget as HTMLInputElement).checked });

  return (
    <section class="card" aria-labelledby="ss-title" data-self-service>
      <div class="card-head">
        <h2 id="ss-title">Customer Self-Service API Keys</h2>
        <span class={saved.enabled ? "status status-active" : "status"} data-ss-state>
          {saved.enabled ? "On" : "Off"}
        </span>
      </div>
      <p class="hint">
        Lets your customers create their own pay-as-you-go AI Gateway keys in their portal. A customer sees AI Gateway only
        when this is on, its AI credits are on, and its AI Gateway menu is on (the switches in the list above).
      </p>
      <div class="deposit-rule" data-deposit-rule>
        <strong>
          Each customer key holds {credits(deposit)} credits ({usd(deposit)}) of your balance as a deposit.
        </strong>{" "}
        It comes back when the key is revoked. While your balance is below {credits(deposit)} credits, your customers'
        keys are suspended; they work again once you top up.
      </div>
      <form onSubmit={submit}>
        <fieldset disabled={!canWrite}>
          <legend class="visually-hidden">Self-service settings</legend>
          <label class="check switch-row">
            <input type="checkbox" role="switch" checked={form.enabled} onChange={check("enabled")} data-ss="enabled" />
            <span>Customers may create their own keys</span>
          </label>
          <label class="check switch-row">
            <input
              type="checkbox"
              role="switch"
              checked={form.apply_to_new_customers}
              onChange={check("apply_to_new_customers")}
              data-ss="apply-new"
            />
            <span>Turn the AI Gateway menu on for new customers</span>
          </label>
          <label class="check switch-row">
            <input
              type="checkbox"
              checked={form.apply_to_existing_customers}
              onChange={check("apply_to_existing_customers")}
              data-ss="apply-existing"
            />
            <span>Also turn it on for every existing customer when saving</span>
          </label>
          <div class="grid-2">
            <Field
              label="Default profit multiplier"
              id="ss-multiplier"
              error={multiplierError}
              hint="Customer keys bill the provider cost × this."
            >
              <input
                {...described("ss-multiplier", multiplierError, true)}
                inputMode="decimal"
                value={form.default_profit_multiplier}
                onInput={(e) => setForm({ ...form, default_profit_multiplier: e.currentTarget.value })}
              />
            </Field>
            <Field
              label="AI credit → USD cents"
              id="ss-cents"
              error={centsError}
              hint={`1 AI credit is worth ${form.ai_credit_price_cents ? formatDecimal(form.ai_credit_price_cents, 0, 6) : "…"} US cents.`}
            >
              <input
                {...described("ss-cents", centsError, true)}
                inputMode="decimal"
                value={form.ai_credit_price_cents}
                onInput={(e) => setForm({ ...form, ai_credit_price_cents: e.currentTarget.value })}
              />
            </Field>
          </div>
          {error && (
            <p class="form-error" role="alert">
              {error}
            </p>
          )}
          <div class="form-actions">
            <p class="notice-inline" role="status" data-ss-notice>
              {notice ?? ""}
            </p>
            <button type="submit" class="button button-primary" disabled={busy} data-ss-save>
              {busy ? "Saving…" : "Save settings"}
            </button>
          </div>
        </fieldset>
      </form>
      <ConfirmDialog
        open={confirming}
        title="Turn AI Gateway on for every customer?"
        confirmLabel="Save and apply to all"
        busy={busy}
        onConfirm={() => void save()}
        onClose={() => setConfirming(false)}
        name="apply-existing"
      >
        <p>
          The AI Gateway menu is turned on for <strong>every existing customer</strong> now. Those with AI credits on will
          see AI Gateway{form.enabled ? "" : " once self-service is on"} and can create keys; each key holds{" "}
          {credits(deposit)} credits of your balance.
        </p>
      </ConfirmDialog>
    </section>
  );
}
