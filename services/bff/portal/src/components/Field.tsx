// A labelled form field with its error next to it (from the API's `fields`, or checked here).

import type { ComponentChildren } from "preact";

export interface FieldProps {
  label: string;
  id: string;
  error?: string | undefined;
  hint?: ComponentChildren;
  children: ComponentChildren;
}

export function Field({ label, id, error, hint, children }: FieldProps) {
  return (
    <div class={error ? "field field-invalid" : "field"}>
      <label for={id}>{label}</label>
      {children}
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error && (
        <p class="field-error" id={`${id}-error`} role="alert" data-field-error={id}>
          {error}
        </p>
      )}
    </div>
  );
}

/** aria attributes of an input inside a Field. */
export function described(id: string, error: string | undefined, hint = false) {
  const ids = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean).join(" ");
  return { id, "aria-invalid": error ? true : undefined, "aria-describedby": ids || undefined };
}

/** The API's field errors, by field; `name` also claims nested ones (`billing.x` under `billing.x.y`). */
export function errorFor(fields: Record<string, string>, ...names: string[]): string | undefined {
  for (const [key, message] of Object.entries(fields)) {
    if (names.some((n) => key === n || key.startsWith(n + ".") || key.startsWith(n + "["))) return message;
  }
  return undefined;
}
