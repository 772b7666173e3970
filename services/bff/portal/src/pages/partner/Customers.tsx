// The partner's Customers page: each customer's AI credit balance and its three switches
// (AI credits, the AI Gateway menu, API access), whether it sees AI Gateway and why not,
// granting AI credits (confirmed, one Idempotency-Key per dialog opening), adding a
// customer; the Customer Self-Service API Keys settings; and the customer portal's branding.

import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../../api";
import { Dialog } from "../../components/Dialog";
import { described, errorFor, Field } from "../../components/Field";
import { Shell } from "../../components/Shell";
import { formatDecimal } from "../../format";
import { messageOf, partnerNav } from "../../partner/nav";
import { BrandingCard } from "../../partner/BrandingCard";
import { SelfServiceCard } from "../../partner/SelfServiceCard";
import type { AiCreditGrant, CustomerFull, Missing } from "../../partner/types";
import type { Page, Partner } from "../../types";
import type { PartnerPageProps } from "./Usage";

type Switch = "ai_credits_enabled" | "ai_gateway_menu_enabled" | "api_access_enabled";
const SWITCHES: { name: Switch; label: string }[] = [
  { name: "ai_credits_enabled", label: "AI credits" },
  { name: "ai_gateway_menu_enabled", label: "AI Gateway menu" },
  { name: "api_access_enabled", label: "API access" },
];
const MISSING: Record<Missing, string> = {
  self_service_disabled: "self-service is off",
  ai_credits_disabled: "AI credits are off",
  ai_gateway_menu_disabled: "the AI Gateway menu is off",
};

function aiCredits(value: string): string {
  return formatDecimal(value, 0, 2);
}

function GrantDialog({ customer, onDone, onClose }: { customer: CustomerFull | null; onDone: (g: AiCreditGrant) => void; onClose: () => void }) {
  const [amount, setAmount] = useState("");
  const [memo, setMemo] = useState("");
  const [step, setStep] = useState<"edit" | "confirm">("edit");
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const sending = useRef(false);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [customer]);

  useEffect(() => {
    setAmount("");
    setMemo("");
    setStep("edit");
    setFields({});
    setError(null);
    setBusy(false);
  }, [customer]);

  const next = (e: Event) => {
    e.preventDefault();
    const v = amount.trim();
    if (!/^\d+(\.\d{1,6})?$/.test(v) || Number(v) <= 0) {
      setFields({ amount: "Enter a positive number of AI credits (up to 6 decimals)." });
      return;
    }
    setFields({});
    setStep("confirm");
  };
  const grant = async () => {
    if (!customer || sending.current) return;
    sending.current = true;
    setBusy(true);
    setError(null);
    try {
      const g = await api<AiCreditGrant>("POST", `/partner/customers/${customer.id}/ai-credits`, {
        body: { amount: amount.trim(), memo: memo.trim() },
        idempotencyKey,
      });
      onDone(g);
    } catch (e) {
      if (e instanceof ApiError && Object.keys(e.fields).length) {
        setFields(e.fields);
        setStep("edit");
      }
      setError(messageOf(e));
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };
  const amountError = errorFor(fields, "amount");
  const memoError = errorFor(fields, "memo");
  return (
    <Dialog
      open={customer !== null}
      title={customer ? `Grant AI credits to ${customer.name}` : ""}
      onClose={onClose}
      name="grant"
      footer={
        step === "edit" ? (
          <>
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" form="grant-form" class="button button-primary" data-grant-next>
              Review
            </button>
          </>
        ) : (
          <>
            <button type="button" class="button" onClick={() => setStep("edit")} disabled={busy}>
              Back
            </button>
            <button type="button" class="button button-primary" onClick={() => void grant()} disabled={busy} data-confirm>
              {busy ? "Granting…" : `Grant ${aiCredits(amount.trim())} AI credits`}
            </button>
          </>
        )
      }
    >
      {step === "edit" ? (
        <form id="grant-form" onSubmit={next} noValidate>
          <p>
            AI credits you sold this customer. Its customer-billed keys and its own keys spend them; your own credit balance
            does not change.
          </p>
          <Field label="AI credits to grant" id="grant-amount" error={amountError}>
            <input
              {...described("grant-amount", amountError)}
              inputMode="decimal"
              value={amount}
              onInput={(e) => setAmount(e.currentTarget.value)}
            />
          </Field>
          <Field label="Memo (optional)" id="grant-memo" error={memoError} hint="An invoice number, for your records.">
            <input {...described("grant-memo", memoError, true)} maxLength={200} value={memo} onInput={(e) => setMemo(e.currentTarget.value)} />
          </Field>
        </form>
      ) : (
        <p data-grant-confirm>
          Grant <strong>{aiCredits(amount.trim())} AI credits</strong> to <strong class="break">{customer?.name}</strong>
          {memo.trim() ? ` (${memo.trim()})` : ""}? Its balance goes from {customer ? aiCredits(customer.ai_credit_balance.ai_credits) : "…"} to{" "}
          {customer ? aiCredits(addDecimal(customer.ai_credit_balance.ai_credits, amount.trim())) : "…"} AI credits.
        </p>
      )}
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
    </Dialog>
  );
}

/** a + b on decimal strings of at most 6 places (display only). */
function addDecimal(a: string, b: string): string {
  const micro = (s: string) => {
    const [w = "0", f = ""] = s.split(".");
    return BigInt(w) * 1_000_000n + BigInt((f + "000000").slice(0, 6)) * (s.startsWith("-") ? -1n : 1n);
  };
  const sum = micro(a) + micro(b);
  return `${sum / 1_000_000n}.${(sum % 1_000_000n).toString().padStart(6, "0")}`;
}

function AddCustomer({ open, onDone, onClose }: { open: boolean; onDone: (c: CustomerFull) => void; onClose: () => void }) {
  const [name, setName] = useState("");
  const [aiOn, setAiOn] = useState(true);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [open]);
  useEffect(() => {
    setName("");
    setFields({});
    setError(null);
  }, [open]);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!name.trim()) {
      setFields({ name: "Give the customer a name." });
      return;
    }
    setBusy(true);
    try {
      onDone(await api<CustomerFull>("POST", "/partner/customers", { body: { name: name.trim(), ai_credits_enabled: aiOn }, idempotencyKey }));
    } catch (err) {
      if (err instanceof ApiError) setFields(err.fields);
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  const nameError = errorFor(fields, "name");
  return (
    <Dialog
      open={open}
      title="Add a customer"
      onClose={onClose}
      name="add-customer"
      footer={
        <>
          <button type="button" class="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" form="add-customer-form" class="button button-primary" disabled={busy}>
            Add customer
          </button>
        </>
      }
    >
      <form id="add-customer-form" onSubmit={submit} noValidate>
        <Field label="Customer name" id="customer-name" error={nameError}>
          <input {...described("customer-name", nameError)} maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <label class="check">
          <input type="checkbox" checked={aiOn} onChange={(e) => setAiOn(e.currentTarget.checked)} />
          <span>AI credits on</span>
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

export function Customers({ signed, onSignOut, path }: PartnerPageProps) {
  const [partner, setPartner] = useState<Partner | null>(null);
  const [customers, setCustomers] = useState<CustomerFull[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [granting, setGranting] = useState<CustomerFull | null>(null);
  const [adding, setAdding] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const reload = useCallback(() => {
    api<Page<CustomerFull>>("GET", "/partner/customers", { query: { limit: 200 } }).then(
      (p) => {
        setCustomers(p.data);
        setCursor(p.next_cursor);
      },
      (e) => setError(messageOf(e)),
    );
  }, []);
  useEffect(() => {
    api<Partner>("GET", "/partner").then(setPartner, (e) => setError(messageOf(e)));
    reload();
  }, [reload]);

  const more = () => {
    if (!cursor) return;
    api<Page<CustomerFull>>("GET", "/partner/customers", { query: { limit: 200, cursor } }).then((p) => {
      setCustomers((c) => [...(c ?? []), ...p.data]);
      setCursor(p.next_cursor);
    }, (e) => setError(messageOf(e)));
  };
  const replace = (c: CustomerFull) => setCustomers((all) => (all ?? []).map((x) => (x.id === c.id ? c : x)));

  const flip = async (c: CustomerFull, name: Switch, on: boolean) => {
    setBusy(c.id + name);
    setError(null);
    replace({ ...c, [name]: on }); // shown at once; the API's answer (or the old state) follows
    try {
      const changed = await api<CustomerFull>("PATCH", `/partner/customers/${c.id}`, { body: { [name]: on } });
      replace(changed);
      setNotice(`${SWITCHES.find((s) => s.name === name)?.label} ${on ? "on" : "off"} for ${c.name}.`);
    } catch (e) {
      replace(c);
      setError(messageOf(e));
    } finally {
      setBusy(null);
    }
  };

  return (
    <Shell user={signed.user} org={partner?.name} title="Customers" onSignOut={onSignOut} nav={partnerNav(path)}>
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      <section class="card" aria-labelledby="customers-title">
        <div class="card-head">
          <h2 id="customers-title">Customers</h2>
          {signed.canWrite && (
            <button type="button" class="button button-primary" onClick={() => setAdding(true)} data-open-add-customer>
              Add customer
            </button>
          )}
        </div>
        <p class="visually-hidden" role="status">
          {notice ?? ""}
        </p>
        {notice && (
          <p class="notice" data-notice>
            {notice}
          </p>
        )}
        {customers === null ? (
          <p class="muted" aria-busy="true">
            Loading customers…
          </p>
        ) : customers.length === 0 ? (
          <p class="empty">No customers yet.</p>
        ) : (
          <ul class="customer-list">
            {customers.map((c) => (
              <li class="customer" data-customer={c.id}>
                <div class="customer-main">
                  <h3 class="truncate" title={c.name}>
                    {c.name}
                  </h3>
                  <p class="customer-balance">
                    <span class="stat-label">AI credit balance</span>{" "}
                    <strong class="money" title={`${c.ai_credit_balance.ai_credits} AI credits`} data-ai-balance={c.ai_credit_balance.uai}>
                      {aiCredits(c.ai_credit_balance.ai_credits)}
                    </strong>
                  </p>
                  <p class="muted customer-visibility" data-visibility={c.ai_gateway.visible ? "visible" : "hidden"}>
                    {c.ai_gateway.visible
                      ? "Sees AI Gateway in its portal."
                      : `No AI Gateway in its portal: ${c.ai_gateway.missing.map((m) => MISSING[m]).join(", ")}.`}
                  </p>
                </div>
                <div class="switches" role="group" aria-label={`${c.name}: switches`}>
                  {SWITCHES.map((s) => (
                    <label class="check switch-row">
                      <input
                        type="checkbox"
                        role="switch"
                        checked={c[s.name]}
                        disabled={!signed.canWrite}
                        aria-busy={busy === c.id + s.name}
                        onChange={(e) => void flip(c, s.name, e.currentTarget.checked)}
                        data-switch={s.name}
                      />
                      <span>{s.label}</span>
                    </label>
                  ))}
                </div>
                {signed.canWrite && (
                  <div class="customer-actions">
                    <button type="button" class="button button-small" onClick={() => setGranting(c)} data-open-grant>
                      Grant AI credits
                    </button>
                  </div>
                )}
              </li>
            ))}
          </ul>
        )}
        {cursor && (
          <p class="table-foot">
            <button type="button" class="link" onClick={more}>
              Load more
            </button>
          </p>
        )}
      </section>
      <SelfServiceCard canWrite={signed.canWrite} onSaved={reload} />
      <BrandingCard canWrite={signed.canWrite} partnerName={partner?.name} />
      <GrantDialog
        customer={granting}
        onClose={() => setGranting(null)}
        onDone={(g) => {
          const who = granting;
          setGranting(null);
          if (who) {
            replace({ ...who, ai_credit_balance: g.balance });
            setNotice(
              g.replayed
                ? `That grant was already made to ${who.name}.`
                : `Granted ${aiCredits(g.granted.ai_credits)} AI credits to ${who.name}.`,
            );
          }
          reload();
        }}
      />
      <AddCustomer
        open={adding}
        onClose={() => setAdding(false)}
        onDone={(c) => {
          setAdding(false);
          setNotice(`Customer ${c.name} added.`);
          reload();
        }}
      />
    </Shell>
  );
}
