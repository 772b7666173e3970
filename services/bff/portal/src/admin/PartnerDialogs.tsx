// The platform admin's dialogs: create a partner, change its tier, suspend / resume it
// (confirmed), and deposit credits (a form, then a confirmation that names the partner and
// the amount; one Idempotency-Key per opening, so a double click deposits once).

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../api";
import { ConfirmDialog, Dialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { Credits } from "../components/Money";
import { formatDecimal } from "../format";
import { type AdminPartner, type Deposit, TIERS } from "./types";

export type AdminAction = "tier" | "suspend" | "resume" | "deposit";

function useSubmit() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const sending = useRef(false);
  const reset = () => {
    setBusy(false);
    setError(null);
    setFields({});
    sending.current = false;
  };
  const run = async (work: () => Promise<void>) => {
    if (sending.current) return;
    sending.current = true;
    setBusy(true);
    setError(null);
    setFields({});
    try {
      await work();
    } catch (e) {
      if (e instanceof ApiError) {
        setFields(e.fields);
        setError(e.message);
      } else setError(String(e));
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };
  return { busy, error, fields, reset, run };
}

export function CreatePartnerDialog({
  open,
  onCreated,
  onClose,
}: {
  open: boolean;
  onCreated: (p: AdminPartner) => void;
  onClose: () => void;
}) {
  const [name, setName] = useState("");
  const [tier, setTier] = useState("starter");
  const [ref, setRef] = useState("");
  const s = useSubmit();
  useEffect(() => {
    if (!open) return;
    setName("");
    setTier("starter");
    setRef("");
    s.reset();
  }, [open]);
  const nameError = errorFor(s.fields, "name");
  const tierError = errorFor(s.fields, "tier");
  const refError = errorFor(s.fields, "external_ref");
  const submit = (e: Event) => {
    e.preventDefault();
    void s.run(async () => {
      const body = { name: name.trim(), tier, external_ref: ref.trim() || null };
      onCreated(await api<AdminPartner>("POST", "/admin/partners", { body }));
    });
  };
  return (
    <Dialog
      open={open}
      title="Create a partner"
      onClose={onClose}
      name="create-partner"
      footer={
        <>
          <button type="button" class="button" onClick={onClose} disabled={s.busy}>
            Cancel
          </button>
          <button type="submit" form="create-partner-form" class="button button-primary" disabled={s.busy} data-submit>
            {s.busy ? "Creating…" : "Create partner"}
          </button>
        </>
      }
    >
      <form id="create-partner-form" onSubmit={submit} noValidate>
        {s.error && (
          <p class="form-error" role="alert">
            {s.error}
          </p>
        )}
        <Field label="Partner name" id="partner-name" error={nameError}>
          <input {...described("partner-name", nameError)} value={name} maxLength={200} autoComplete="off" onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Tier" id="partner-tier" error={tierError}>
          <select {...described("partner-tier", tierError)} value={tier} onChange={(e) => setTier(e.currentTarget.value)}>
            {TIERS.map((t) => (
              <option value={t.id}>{t.label}</option>
            ))}
          </select>
        </Field>
        <Field label="Your reference (optional)" id="partner-ref" error={refError} hint="e.g. the billing system's id; creating twice with it returns the first partner.">
          <input {...described("partner-ref", refError, true)} value={ref} maxLength={200} autoComplete="off" onInput={(e) => setRef(e.currentTarget.value)} />
        </Field>
      </form>
    </Dialog>
  );
}

export interface PartnerActionProps {
  target: { partner: AdminPartner; action: AdminAction } | null;
  onDone: (p: AdminPartner, message: string) => void;
  onClose: () => void;
}

export function PartnerActionDialog({ target, onDone, onClose }: PartnerActionProps) {
  const [tier, setTier] = useState("");
  const [amount, setAmount] = useState("");
  const [reference, setReference] = useState("");
  const [memo, setMemo] = useState("");
  const [confirming, setConfirming] = useState(false);
  const s = useSubmit();
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [target]);

  useEffect(() => {
    s.reset();
    setTier(target?.partner.tier ?? "");
    setAmount("");
    setReference("");
    setMemo("");
    setConfirming(false);
  }, [target]);

  if (!target) return <ConfirmDialog open={false} title="" confirmLabel="" onConfirm={onClose} onClose={onClose} children={null} />;
  const { partner, action } = target;
  const path = `/admin/partners/${partner.id}`;

  if (action === "suspend" || action === "resume") {
    const suspend = action === "suspend";
    return (
      <ConfirmDialog
        open
        name={action}
        title={`${suspend ? "Suspend" : "Resume"} ${partner.name}?`}
        confirmLabel={suspend ? "Suspend partner" : "Resume partner"}
        danger={suspend}
        busy={s.busy}
        error={s.error}
        onClose={onClose}
        onConfirm={() =>
          void s.run(async () => {
            const changed = await api<AdminPartner>("PATCH", path, { body: { status: suspend ? "suspended" : "active" } });
            onDone(changed, `${changed.name} ${suspend ? "suspended" : "resumed"}.`);
          })
        }
      >
        <p>
          {suspend
            ? "Every key of this partner (and of its customers) is refused at the gateway until you resume it. Its balance and keys are kept."
            : "Its keys work again at the gateway at once."}
        </p>
      </ConfirmDialog>
    );
  }

  if (action === "tier") {
    const tierError = errorFor(s.fields, "tier");
    return (
      <ConfirmDialog
        open
        name="tier"
        title={`Change the tier of ${partner.name}`}
        confirmLabel="Change tier"
        busy={s.busy}
        error={tierError ? null : s.error}
        onClose={onClose}
        onConfirm={() =>
          void s.run(async () => {
            const changed = await api<AdminPartner>("PATCH", path, { body: { tier } });
            onDone(changed, `${changed.name} is now on the ${changed.tier} tier.`);
          })
        }
      >
        <Field label="Tier" id="change-tier" error={tierError} hint="The fee and the models its keys may call change at once.">
          <select {...described("change-tier", tierError, true)} value={tier} onChange={(e) => setTier(e.currentTarget.value)}>
            {TIERS.map((t) => (
              <option value={t.id}>{t.label}</option>
            ))}
          </select>
        </Field>
      </ConfirmDialog>
    );
  }

  // deposit: the form, then the confirmation
  const amountError = errorFor(s.fields, "amount_credits");
  const referenceError = errorFor(s.fields, "payment_reference");
  const memoError = errorFor(s.fields, "memo");
  const validAmount = /^\d{1,12}(\.\d{1,6})?$/.test(amount.trim()) && Number(amount) > 0;
  const usd = validAmount ? formatDecimal(String(Number(amount) / 100), 2, 2) : "";
  const deposit = () =>
    void s.run(async () => {
      const body = { amount_credits: amount.trim(), payment_reference: reference.trim(), memo: memo.trim() };
      const done = await api<Deposit>("POST", `${path}/deposits`, { body, idempotencyKey });
      const p = await api<AdminPartner>("GET", path);
      onDone(p, done.replayed ? "That deposit was already made; nothing moved." : `Deposited ${formatDecimal(done.amount.credits)} credits into ${p.name}.`);
    }).then(() => setConfirming(false));
  return (
    <Dialog
      open
      name="deposit"
      title={confirming ? `Deposit into ${partner.name}?` : `Deposit credits: ${partner.name}`}
      onClose={onClose}
      footer={
        confirming ? (
          <>
            <button type="button" class="button" onClick={() => setConfirming(false)} disabled={s.busy}>
              Back
            </button>
            <button type="button" class="button button-primary" onClick={deposit} disabled={s.busy} data-confirm>
              {s.busy ? "Depositing…" : "Confirm deposit"}
            </button>
          </>
        ) : (
          <>
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" form="deposit-form" class="button button-primary" data-review>
              Review deposit
            </button>
          </>
        )
      }
    >
      {s.error && (
        <p class="form-error" role="alert">
          {s.error}
        </p>
      )}
      {confirming ? (
        <div data-deposit-confirm>
          <p>
            <strong>{formatDecimal(amount.trim(), 0, 6)} credits</strong> (${usd}) will be added to the balance of{" "}
            <strong class="break">{partner.name}</strong>, now <Credits value={partner.balance} />.
          </p>
          <p class="hint">Only deposit once the payment is confirmed{reference.trim() ? ` (payment ${reference.trim()})` : ""}.</p>
        </div>
      ) : (
        <form
          id="deposit-form"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            if (validAmount) setConfirming(true);
          }}
        >
          <Field
            label="Credits to deposit"
            id="deposit-amount"
            error={amountError ?? (amount && !validAmount ? "A positive number of credits, up to six decimals." : undefined)}
            hint={validAmount ? `= $${usd} (100 credits = $1.00)` : "100 credits = $1.00"}
          >
            <input {...described("deposit-amount", amountError, true)} inputMode="decimal" value={amount} autoComplete="off" onInput={(e) => setAmount(e.currentTarget.value)} />
          </Field>
          <Field label="Payment reference (optional)" id="deposit-ref" error={referenceError}>
            <input {...described("deposit-ref", referenceError)} value={reference} maxLength={120} autoComplete="off" onInput={(e) => setReference(e.currentTarget.value)} />
          </Field>
          <Field label="Memo (optional)" id="deposit-memo" error={memoError}>
            <input {...described("deposit-memo", memoError)} value={memo} maxLength={200} autoComplete="off" onInput={(e) => setMemo(e.currentTarget.value)} />
          </Field>
        </form>
      )}
    </Dialog>
  );
}
