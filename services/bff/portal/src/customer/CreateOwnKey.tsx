// The customer's Create Key dialog: a name, an optional description and the models. No
// budget: the key is pay-as-you-go on the customer's AI credits. One Idempotency-Key per
// opening, so a double click (or a retry after a lost answer) makes one key.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, newIdempotencyKey } from "../api";
import { Dialog } from "../components/Dialog";
import { described, errorFor, Field } from "../components/Field";
import type { Catalog, KeyCreated } from "../types";

export interface CreateOwnKeyProps {
  open: boolean;
  catalog: Catalog | null;
  onCreated: (created: KeyCreated) => void;
  onClose: () => void;
}

export function CreateOwnKeyDialog({ open, catalog, onCreated, onClose }: CreateOwnKeyProps) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [models, setModels] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [attempt, setAttempt] = useState(0);
  const sending = useRef(false);
  const idempotencyKey = useMemo(() => newIdempotencyKey(), [open, attempt]);

  useEffect(() => {
    if (!open) return;
    setName("");
    setDescription("");
    setModels([]);
    setBusy(false);
    setError(null);
    setFields({});
    sending.current = false;
  }, [open]);

  const submit = async (event: Event) => {
    event.preventDefault();
    if (sending.current) return;
    if (!name.trim()) {
      setFields({ name: "Give the key a name." });
      return;
    }
    sending.current = true;
    setBusy(true);
    setError(null);
    setFields({});
    try {
      const body = { name: name.trim(), description: description.trim(), allowed_models: models };
      onCreated(await api<KeyCreated>("POST", "/customer/keys", { body, idempotencyKey }));
    } catch (e) {
      if (e instanceof ApiError) {
        setFields(e.fields);
        setError(e.message);
        if (e.status === 409) setAttempt((n) => n + 1); // that key is used up: the next try is new
      } else setError(String(e));
    } finally {
      sending.current = false;
      setBusy(false);
    }
  };

  const toggle = (id: string, on: boolean) => setModels((m) => (on ? [...m, id] : m.filter((x) => x !== id)));
  const nameError = errorFor(fields, "name");
  const descriptionError = errorFor(fields, "description");
  const modelsError = errorFor(fields, "allowed_models");

  return (
    <Dialog
      open={open}
      title="Create an AI Gateway key"
      onClose={onClose}
      name="create-own-key"
      footer={
        <>
          <button type="button" class="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" form="create-own-key-form" class="button button-primary" disabled={busy} data-create-submit>
            {busy ? "Creating…" : "Create key"}
          </button>
        </>
      }
    >
      <form id="create-own-key-form" onSubmit={submit} noValidate>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <Field label="Key name" id="own-key-name" error={nameError}>
          <input
            {...described("own-key-name", nameError)}
            value={name}
            maxLength={200}
            required
            autoComplete="off"
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        <Field label="Description (optional)" id="own-key-description" error={descriptionError}>
          <input
            {...described("own-key-description", descriptionError)}
            value={description}
            maxLength={500}
            autoComplete="off"
            onInput={(e) => setDescription(e.currentTarget.value)}
          />
        </Field>
        <fieldset class="models" aria-describedby="own-key-models-hint">
          <legend>Allowed models</legend>
          <p class="hint" id="own-key-models-hint">
            Leave all unticked to allow every model of your plan.
          </p>
          {catalog === null ? (
            <p class="muted">Loading models…</p>
          ) : (
            catalog.categories.map((group) => (
              <div class="model-group" role="group" aria-label={group.label}>
                <h3>{group.label}</h3>
                {group.models.map((m) => (
                  <label class="check">
                    <input
                      type="checkbox"
                      checked={models.includes(m.id)}
                      onChange={(e) => toggle(m.id, e.currentTarget.checked)}
                    />
                    <span class="break">{m.id}</span>
                  </label>
                ))}
              </div>
            ))
          )}
          {modelsError && (
            <p class="field-error" role="alert" data-field-error="allowed_models">
              {modelsError}
            </p>
          )}
        </fieldset>
        <p class="notice">
          Pay as you go: there is no budget to set. Each request is billed to your AI credits at your provider's
          rates.
        </p>
      </form>
    </Dialog>
  );
}
