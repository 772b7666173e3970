// Customer portal branding (GET/PUT /partner/branding): the name, logo and colours the
// partner's customers see in their portal, with a live preview of their top bar drawn by the
// customer portal's own rules (customer/brand.ts). PUT replaces the whole branding; an empty
// field falls back to the default (the partner's name, no logo, the product's colours).

import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { described, errorFor, Field } from "../components/Field";
import { type Branding, brandStyle, safeLogo } from "../customer/brand";
import { messageOf } from "./nav";

interface Form {
  display_name: string;
  logo_url: string;
  primary_color: string;
  accent_color: string;
}
type ColorName = "primary_color" | "accent_color";

/** The product's colour, shown in the picker while the field is empty (the default). */
const PRODUCT_COLOR = "#1f4fd1";
const HEX = /^#[0-9a-f]{6}$/i;

function formOf(b: Branding): Form {
  return {
    display_name: b.custom_name ? b.display_name : "",
    logo_url: b.logo_url ?? "",
    primary_color: b.primary_color ?? "",
    accent_color: b.accent_color ?? "",
  };
}

const orNull = (s: string) => s.trim() || null;

export function BrandingCard({ canWrite, partnerName }: { canWrite: boolean; partnerName: string | undefined }) {
  const [saved, setSaved] = useState<Branding | null>(null);
  const [form, setForm] = useState<Form | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = (b: Branding) => {
    setSaved(b);
    setForm(formOf(b));
  };
  useEffect(() => {
    api<Branding>("GET", "/partner/branding").then(load, (e) => setError(messageOf(e)));
  }, []);

  if (!form || !saved) {
    return (
      <section class="card" aria-labelledby="brand-title" aria-busy="true">
        <h2 id="brand-title">Customer portal branding</h2>
        {error && <p class="form-error">{error}</p>}
      </section>
    );
  }

  const defaultName = (saved.custom_name ? partnerName : saved.display_name) ?? partnerName ?? "";
  const set = (name: keyof Form) => (e: Event) => setForm({ ...form, [name]: (e.currentTarget as HTMLInputElement).value });
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setFields({});
    setNotice(null);
    try {
      const b = await api<Branding>("PUT", "/partner/branding", {
        body: {
          display_name: orNull(form.display_name),
          logo_url: orNull(form.logo_url),
          primary_color: orNull(form.primary_color)?.toLowerCase() ?? null,
          accent_color: orNull(form.accent_color)?.toLowerCase() ?? null,
        },
      });
      load(b);
      setNotice("Saved. Your customers see it on their next page load.");
    } catch (err) {
      if (err instanceof ApiError) setFields(err.fields);
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  // the preview: what the customer's top bar would show with the form as it is now
  const preview: Branding = {
    ...saved,
    display_name: form.display_name.trim() || defaultName,
    logo_url: form.logo_url.trim() || null,
    primary_color: HEX.test(form.primary_color.trim()) ? form.primary_color.trim().toLowerCase() : null,
    accent_color: HEX.test(form.accent_color.trim()) ? form.accent_color.trim().toLowerCase() : null,
  };
  const logo = safeLogo(preview.logo_url);
  const custom = saved.custom_name || !!saved.logo_url || !!saved.primary_color || !!saved.accent_color;
  const nameError = errorFor(fields, "display_name");
  const logoError = errorFor(fields, "logo_url");
  const colorField = (name: ColorName, label: string, hint: string) => {
    const id = name === "primary_color" ? "brand-primary" : "brand-accent";
    const err = errorFor(fields, name);
    const value = form[name].trim();
    return (
      <Field label={label} id={id} error={err} hint={hint}>
        <div class="color-input">
          <input
            type="color"
            aria-label={`${label}: picker`}
            value={HEX.test(value) ? value.toLowerCase() : PRODUCT_COLOR}
            onInput={set(name)}
            data-brand-picker={name}
          />
          <input
            {...described(id, err, true)}
            placeholder="#rrggbb (empty: default)"
            maxLength={7}
            spellcheck={false}
            value={form[name]}
            onInput={set(name)}
            data-brand-color={name}
          />
        </div>
      </Field>
    );
  };

  return (
    <section class="card" aria-labelledby="brand-title" data-branding>
      <div class="card-head">
        <h2 id="brand-title">Customer portal branding</h2>
        <span class={custom ? "status status-active" : "status"} data-brand-state>
          {custom ? "Custom" : "Default"}
        </span>
      </div>
      <p class="hint">
        The name, logo and colours your customers see in their portal. Leave a field empty for the default: your partner
        name, no logo, the product's colours.
      </p>
      <figure class="brand-preview-figure">
        <figcaption class="hint">Preview of your customers' top bar</figcaption>
        <div
          class="branded brand-preview"
          style={brandStyle(preview)}
          data-brand-preview
          data-preview-primary={preview.primary_color ?? ""}
          data-preview-accent={preview.accent_color ?? ""}
        >
          <div class="topbar">
            <span class="brand-name brand-custom">
              {logo && <img class="brand-logo" src={logo} alt="" referrerpolicy="no-referrer" data-preview-logo />}
              <span class="truncate" title={preview.display_name} data-preview-name>
                {preview.display_name}
              </span>
            </span>
            <span class="preview-nav">
              <span class="preview-tab preview-tab-current">Overview</span>
              <span class="preview-tab">AI Gateway</span>
            </span>
            <span class="button button-primary button-small preview-button">Create key</span>
          </div>
        </div>
      </figure>
      <form onSubmit={(e) => void submit(e)} noValidate>
        <fieldset disabled={!canWrite}>
          <legend class="visually-hidden">Branding</legend>
          <div class="grid-2">
            <Field label="Display name" id="brand-name" error={nameError} hint={`Empty: ${defaultName || "your partner name"}.`}>
              <input
                {...described("brand-name", nameError, true)}
                maxLength={80}
                value={form.display_name}
                onInput={set("display_name")}
              />
            </Field>
            <Field
              label="Logo URL"
              id="brand-logo"
              error={logoError}
              hint="https://…, or a data:image/png, jpeg, gif or webp URL of at most 32 KiB (no SVG)."
            >
              <input
                {...described("brand-logo", logoError, true)}
                type="url"
                inputMode="url"
                spellcheck={false}
                value={form.logo_url}
                onInput={set("logo_url")}
              />
            </Field>
            {colorField("primary_color", "Primary colour", "The top bar, buttons and links.")}
            {colorField("accent_color", "Accent colour", "Highlights: the current menu item, charts, badges.")}
          </div>
          {error && (
            <p class="form-error" role="alert">
              {error}
            </p>
          )}
          <div class="form-actions">
            <p class="notice-inline" role="status" data-brand-notice>
              {notice ?? ""}
            </p>
            {canWrite ? (
              <button type="submit" class="button button-primary" disabled={busy} data-brand-save>
                {busy ? "Saving…" : "Save branding"}
              </button>
            ) : (
              <p class="muted" data-brand-readonly>
                Only owners and admins can change the branding.
              </p>
            )}
          </div>
        </fieldset>
      </form>
    </section>
  );
}
