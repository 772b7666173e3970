// The one time a key's secret is shown: after create or regenerate. It lives in memory only
// (never in storage), so a reload never shows it again.

import { CopyButton } from "../components/CopyButton";

export interface ShownSecret {
  keyName: string;
  secret: string;
  action: "created" | "regenerated";
  /** One of the key's models, for the quick start. */
  model: string | undefined;
}

export function SecretBanner({ shown, onDismiss }: { shown: ShownSecret; onDismiss: () => void }) {
  return (
    <section class="banner banner-success" role="status" aria-labelledby="secret-title" data-secret-banner>
      <div class="banner-text">
        <h2 id="secret-title" class="truncate" title={shown.keyName}>
          Key {shown.action}: {shown.keyName}
        </h2>
        <p>
          <strong>Copy this secret now: it will not be shown again.</strong> If you lose it, regenerate the key.
        </p>
        <div class="secret-row">
          <code class="secret" data-secret>
            {shown.secret}
          </code>
          <CopyButton text={shown.secret} label="Copy secret" />
        </div>
      </div>
      <button type="button" class="button button-small" onClick={onDismiss}>
        Done
      </button>
    </section>
  );
}
