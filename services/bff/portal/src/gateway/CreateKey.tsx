// The Create Key modal: every field of POST /partner/keys, the total the balance pays
// (POST /partner/keys/quote) and, for customer billing, what the customer would pay
// (POST /partner/billing-preview), both updated as the form changes, before anything is made.
// One Idempotency-Key per opening: a double click, or a retry after a lost answer, makes one key.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../api";
import { Dialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { credits, usd, formatDecimal } from "../format";
import type { Catalog, Customer, KeyCreated, Partner } from "../types";
import { API_NAMES, body, check, emptyForm, RENDERED, usePreview, type Form } from "./keyForm";
import { useQuote } from "./useQuote";

export interface CreateKeyProps {
  open: boolean;
  partner: Partner;
  catalog: Catalog | null;
  customers: Customer[];
  onCreated: (created: KeyCreated) => void;
  onClose: () => void;
}

export function CreateKeyDialog({ open, partner, catalog, customers, onCreated, onClose }: CreateKeyProps) {
  const [form, setForm] = useState<Form>(() => emptyForm(partner));
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const sending = useRef(false); // a second click before the re-render sends nothing
  const [attempt, setAttempt] = useState(0);
  // one per opening (and a new one only after a refusal that used the key up)
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [open, attempt]);
  const { quote, error: quoteError } = useQuote(open ? form.budget : "");
  const { preview, error: previewError } = usePreview(form, open);

  useEffect(() => {
    if (open) {
      setForm(emptyForm(partner));
      setFields({});
      setError(null);
      setBusy(false);
    }
  }, [open]);

  // an edited field's error goes away (the API says again on the next try if it still stands)
  const forget = (name: keyof Form) => {
    const api = API_NAMES[name];
    if (api) setFields((all) => Object.fromEntries(Object.entries(all).filter(([k]) => !errorFor({ [k]: "x" }, api))));
  };
  const set = <K extends keyof Form>(name: K, value: Form[K]) => {
    forget(name);
    setForm((f) => ({ ...f, [name]: value }));
  };
  const toggleModel = (id: string, on: boolean) => {
    forget("models");
    setForm((f) => ({ ...f, models: on ? [...f.models, id] : f.models.filter((m) => m !== id) }));
  };

  const submit = async (event?: Event) => {
    event?.preventDefault();
    if (sending.current) return;
    const found = check(form);
    setFields(found);
    setError(null);
    if (Object.keys(found).length) {
      setError("Some fields need your attention.");
      return;
    }
    setBusy(true);
    sending.current = true;
    try {
      onCreated(await api<KeyCreated>("POST", "/partner/keys", { body: body(form), idempotencyKey }));
    } catch (e) {
      if (e instanceof ApiError) {
        setFields(e.fields);
        setError(e.message);
        // a 409 (e.g. not enough credits) uses the Idempotency-Key up: the next try is a new request
        if (e.status === 409) setAttempt((a) => a + 1);
      } else {
        setError(String(e));
      }
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };

  const err = (...names: string[]) => errorFor(fields, ...names);
  const budgetError = err("budget_credits") ?? quoteError ?? undefined;
  const shortBy = quote && quote.total.ucr > partner.available.ucr;
  const other = Object.entries(fields).filter(([k]) => errorFor({ [k]: "x" }, ...RENDERED) === undefined);

  return (
    <Dialog
      open={open}
      title="Create key"
      onClose={onClose}
      wide
      name="create-key"
      footer={
        <>
          <p class="total" data-create-total aria-live="polite">
            {quote ? (
              <>
                Total required: <strong>{credits(quote.total)} credits</strong> ({usd(quote.total)})
                <span class="muted">
                  {" "}
                  = {credits(quote.budget)} budget + {credits(quote.fee)} fee ({formatDecimal(
                    String(Number(quote.fee_rate) * 100),
                    0,
                    2,
                  )}
                  %)
                </span>
              </>
            ) : (
              <span class="muted">Enter a budget to see the total.</span>
            )}
          </p>
          <button type="button" class="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" form="create-key-form" class="button button-primary" disabled={busy} data-create-submit>
            {busy ? "Creating…" : "Create key"}
          </button>
        </>
      }
    >
      <form id="create-key-form" class="form" onSubmit={submit} noValidate>
        {error && (
          <div class="form-error" role="alert" data-form-error>
            <p>{error}</p>
            {other.length > 0 && (
              <ul>
                {other.map(([k, v]) => (
                  <li>
                    {k}: {v}
                  </li>
                ))}
              </ul>
            )}
          </div>
        )}
        <div class="grid-2">
          <Field label="Key name" id="key-name" error={err("name")}>
            <input
              {...described("key-name", err("name"))}
              value={form.name}
              maxLength={200}
              onInput={(e) => set("name", e.currentTarget.value)}
              autoFocus
            />
          </Field>
          <Field
            label="Budget (credits)"
            id="key-budget"
            error={budgetError}
            hint={
              <>
                100 credits = $1.00. Available: {credits(partner.available)} credits.
                {shortBy && <strong> Not enough credits for this total.</strong>}
              </>
            }
          >
            <input
              {...described("key-budget", budgetError, true)}
              inputMode="numeric"
              value={form.budget}
              onInput={(e) => set("budget", e.currentTarget.value)}
            />
          </Field>
        </div>
        <Field label="Description" id="key-description" error={err("description")}>
          <textarea
            {...described("key-description", err("description"))}
            rows={2}
            value={form.description}
            onInput={(e) => set("description", e.currentTarget.value)}
          />
        </Field>

        <fieldset class="models" aria-describedby={err("allowed_models") ? "models-error" : undefined}>
          <legend>Allowed models</legend>
          {!catalog && <p class="muted">Loading the models of your plan…</p>}
          {catalog?.categories.map((group) => (
            <div class="model-group" data-category={group.category}>
              <h3>{group.label}</h3>
              {group.models.map((m) => (
                <label class="check" title={`$${m.input_usd_per_mtok} in / $${m.output_usd_per_mtok} out per 1M tokens`}>
                  <input
                    type="checkbox"
                    name="allowed_models"
                    value={m.id}
                    checked={form.models.includes(m.id)}
                    onChange={(e) => toggleModel(m.id, e.currentTarget.checked)}
                  />
                  <span>{m.id}</span>
                </label>
              ))}
            </div>
          ))}
          {catalog && <p class="hint">Only the models of your {catalog.tier ?? ""} plan are offered.</p>}
          {err("allowed_models") && (
            <p class="field-error" id="models-error" role="alert" data-field-error="allowed_models">
              {err("allowed_models")}
            </p>
          )}
        </fieldset>

        <fieldset class="section">
          <legend>
            <label class="check">
              <input type="checkbox" checked={form.billing} onChange={(e) => set("billing", e.currentTarget.checked)} />
              <span>Bill usage to a customer</span>
            </label>
          </legend>
          {form.billing && (
            <>
              <div class="grid-2">
                <Field label="Assign to customer" id="bill-customer" error={err("billing.customer_id")}>
                  <select
                    {...described("bill-customer", err("billing.customer_id"))}
                    value={form.customerId}
                    onChange={(e) => set("customerId", e.currentTarget.value)}
                  >
                    <option value="">Choose a customer…</option>
                    {customers.map((c) => (
                      <option value={c.id}>{c.name}</option>
                    ))}
                  </select>
                </Field>
                <Field
                  label="Profit multiplier"
                  id="bill-multiplier"
                  error={err("billing.profit_multiplier")}
                  hint="The provider cost × this is what the customer pays."
                >
                  <input
                    {...described("bill-multiplier", err("billing.profit_multiplier"), true)}
                    inputMode="decimal"
                    value={form.multiplier}
                    onInput={(e) => set("multiplier", e.currentTarget.value)}
                  />
                </Field>
                <Field
                  label="Price per AI credit (cents)"
                  id="bill-cents"
                  error={err("billing.price_per_ai_credit_cents")}
                >
                  <input
                    {...described("bill-cents", err("billing.price_per_ai_credit_cents"))}
                    inputMode="decimal"
                    value={form.centsPerCredit}
                    onInput={(e) => set("centsPerCredit", e.currentTarget.value)}
                  />
                </Field>
                <Field
                  label="Minimum cost per 1M tokens (USD, optional)"
                  id="bill-floor"
                  error={err("billing.floor_usd_per_mtok")}
                >
                  <input
                    {...described("bill-floor", err("billing.floor_usd_per_mtok"))}
                    inputMode="decimal"
                    value={form.floor}
                    onInput={(e) => set("floor", e.currentTarget.value)}
                  />
                </Field>
              </div>
              <div class="preview" data-billing-preview aria-live="polite">
                <h3>Billing preview</h3>
                {!form.models.length && <p class="muted">Choose models to see what the customer pays.</p>}
                {previewError && <p class="field-error">{previewError}</p>}
                {preview && (
                  <div class="table-scroll" tabIndex={0}>
                    <table class="compact">
                      <caption>
                        For {formatDecimal(String(preview.sample_input_tokens), 0, 0)} input +{" "}
                        {formatDecimal(String(preview.sample_output_tokens), 0, 0)} output tokens
                      </caption>
                      <thead>
                        <tr>
                          <th scope="col">Model</th>
                          <th scope="col">Your cost</th>
                          <th scope="col">Customer pays</th>
                          <th scope="col">Your margin</th>
                        </tr>
                      </thead>
                      <tbody>
                        {preview.rows.map((r) => (
                          <tr data-preview-row={r.model}>
                            <th scope="row">{r.model}</th>
                            <td>{usd(r.provider_cost)}</td>
                            <td data-preview-ai-credits={r.customer_price_ai_credits.ai_credits}>
                              {formatDecimal(r.customer_price_ai_credits.ai_credits, 0, 2)} AI credits
                              <span class="muted"> ({usd(r.customer_price)})</span>
                            </td>
                            <td data-preview-margin={r.partner_margin.usd}>{usd(r.partner_margin)}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )}
              </div>
            </>
          )}
        </fieldset>

        <fieldset class="section">
          <legend>
            <label class="check">
              <input
                type="checkbox"
                checked={form.autoTopUp}
                onChange={(e) => set("autoTopUp", e.currentTarget.checked)}
              />
              <span>Enable auto top-up</span>
            </label>
          </legend>
          {form.autoTopUp && (
            <div class="grid-2">
              <Field
                label="Trigger threshold (USD)"
                id="topup-threshold"
                error={err("auto_topup.threshold_usd")}
                hint="Top up when the remaining budget falls below this."
              >
                <input
                  {...described("topup-threshold", err("auto_topup.threshold_usd"), true)}
                  inputMode="decimal"
                  value={form.threshold}
                  onInput={(e) => set("threshold", e.currentTarget.value)}
                />
              </Field>
              <Field
                label="Top-up amount (USD)"
                id="topup-amount-usd"
                error={err("auto_topup.amount_usd")}
                hint="Added each time, plus the platform fee."
              >
                <input
                  {...described("topup-amount-usd", err("auto_topup.amount_usd"), true)}
                  inputMode="decimal"
                  value={form.topUpAmount}
                  onInput={(e) => set("topUpAmount", e.currentTarget.value)}
                />
              </Field>
            </div>
          )}
        </fieldset>

        <details class="section">
          <summary>Domains, rate limits and expiry</summary>
          <Field
            label="Allowed domains (optional)"
            id="key-domains"
            error={err("allowed_domains")}
            hint="One per line: app.example.com or *.example.com. Empty: any origin."
          >
            <textarea
              {...described("key-domains", err("allowed_domains"), true)}
              rows={2}
              value={form.domains}
              onInput={(e) => set("domains", e.currentTarget.value)}
            />
          </Field>
          <div class="grid-3">
            <Field label="Requests per minute" id="key-rpm" error={err("rpm_limit")} hint="0: no limit">
              <input
                {...described("key-rpm", err("rpm_limit"), true)}
                inputMode="numeric"
                value={form.rpm}
                onInput={(e) => set("rpm", e.currentTarget.value)}
              />
            </Field>
            <Field label="Tokens per minute" id="key-tpm" error={err("tpm_limit")} hint="0: no limit">
              <input
                {...described("key-tpm", err("tpm_limit"), true)}
                inputMode="numeric"
                value={form.tpm}
                onInput={(e) => set("tpm", e.currentTarget.value)}
              />
            </Field>
            <Field label="Expires (optional)" id="key-expires" error={err("expires_at")}>
              <input
                {...described("key-expires", err("expires_at"))}
                type="datetime-local"
                value={form.expires}
                onInput={(e) => set("expires", e.currentTarget.value)}
              />
            </Field>
          </div>
        </details>
      </form>
    </Dialog>
  );
}
