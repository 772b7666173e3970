// Top Up, Regenerate and Revoke, each behind a confirmation that says what it costs or
// what it cannot undo. Top-up and regenerate carry one Idempotency-Key per dialog opening.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../api";
import { ConfirmDialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import { Credits } from "../components/Money";
import { credits } from "../format";
import type { Key, KeyDetail, KeyRegenerated, TopUp } from "../types";
import type { Action } from "./KeysTable";
import { useQuote } from "./useQuote";

export interface ActionDone {
  action: Action;
  key: KeyDetail;
  secret?: string | null;
}

export interface KeyActionProps {
  target: { key: Key; action: Action } | null;
  onDone: (done: ActionDone) => void;
  onClose: () => void;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function KeyActionDialog({ target, onDone, onClose }: KeyActionProps) {
  const [busy, setBusy] = useState(false);
  const sending = useRef(false); // a second click before the re-render sends nothing
  const [error, setError] = useState<string | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [amount, setAmount] = useState("100");
  const [detail, setDetail] = useState<KeyDetail | null>(null);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [target]);
  const { quote, error: quoteError } = useQuote(target?.action === "top-up" ? amount : "");

  useEffect(() => {
    setBusy(false);
    setError(null);
    setFields({});
    setAmount("100");
    setDetail(null);
    if (target?.action === "revoke") {
      api<KeyDetail>("GET", `/partner/keys/${target.key.id}`).then(setDetail, (e) => setError(messageOf(e)));
    }
  }, [target]);

  if (!target) return <ConfirmDialog open={false} title="" confirmLabel="" onConfirm={onClose} onClose={onClose} children={null} />;
  const { key, action } = target;
  const path = `/partner/keys/${key.id}`;

  const run = async () => {
    if (sending.current) return;
    sending.current = true;
    setBusy(true);
    setError(null);
    setFields({});
    try {
      if (action === "top-up") {
        if (!/^\d+$/.test(amount.trim()) || Number(amount) <= 0) {
          setFields({ amount_credits: "Enter a whole number of credits, at least 1." });
          return;
        }
        const out = await api<TopUp>("POST", `${path}/top-up`, {
          body: { amount_credits: Number(amount.trim()) },
          idempotencyKey,
        });
        onDone({ action, key: out.key });
      } else if (action === "regenerate") {
        const out = await api<KeyRegenerated>("POST", `${path}/regenerate`, { idempotencyKey });
        onDone({ action, key: out.key, secret: out.secret });
      } else {
        onDone({ action, key: await api<KeyDetail>("POST", `${path}/revoke`) });
      }
    } catch (e) {
      if (e instanceof ApiError && Object.keys(e.fields).length) setFields(e.fields);
      setError(messageOf(e));
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };

  const common = { open: true, busy, error, onConfirm: run, onClose, name: action };
  if (action === "top-up") {
    const amountError = errorFor(fields, "amount_credits") ?? quoteError ?? undefined;
    return (
      <ConfirmDialog {...common} title={`Top up ${key.name}`} confirmLabel="Top up">
        <p>Add budget to this key from your balance. An exhausted key works again once topped up.</p>
        <Field label="Credits to add" id="topup-amount" error={amountError} hint="100 credits = $1.00">
          <input
            {...described("topup-amount", amountError, true)}
            type="text"
            inputMode="numeric"
            value={amount}
            onInput={(e) => {
              setAmount(e.currentTarget.value);
              setFields({}); // the message was about the amount that was there
            }}
          />
        </Field>
        <p class="total" data-topup-total aria-live="polite">
          {quote ? (
            <>
              Your balance pays <strong>{credits(quote.total)} credits</strong> ({credits(quote.budget)} + {credits(quote.fee)}{" "}
              platform fee).
            </>
          ) : (
            " "
          )}
        </p>
      </ConfirmDialog>
    );
  }
  if (action === "regenerate") {
    return (
      <ConfirmDialog {...common} title={`Regenerate ${key.name}?`} confirmLabel="Regenerate" danger>
        <p>
          The key gets a new secret. <strong>The current secret stops working immediately</strong>: every app using it
          must switch to the new one. Budget, spend and settings stay as they are.
        </p>
      </ConfirmDialog>
    );
  }
  return (
    <ConfirmDialog {...common} title={`Revoke ${key.name}?`} confirmLabel="Revoke key" danger>
      <p>
        <strong>Revoking cannot be undone.</strong> The key stops working at once.
      </p>
      {key.budget ? (
        <p data-refund>
          Its unused budget, {detail?.settled_remaining ? <Credits value={detail.settled_remaining} exact /> : "…"}, goes back
          to your balance (less anything requests still in flight use). The platform fee paid when it was funded is not
          refunded.
        </p>
      ) : (
        <p>The deposit held for this customer key goes back to your balance.</p>
      )}
    </ConfirmDialog>
  );
}
