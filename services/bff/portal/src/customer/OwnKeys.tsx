// The customer's keys: the ones it made (revocable, after a confirmation) and those its
// provider bills to it (shown, managed by the provider).

import { ago } from "../format";
import type { Key } from "../types";

export function OwnKeysTable({ keys, onRevoke }: { keys: Key[]; onRevoke: (key: Key) => void }) {
  return (
    <div class="table-scroll" tabIndex={0}>
      <table class="keys own-keys">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Key</th>
            <th scope="col">Models</th>
            <th scope="col">Status</th>
            <th scope="col">Last used</th>
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {keys.map((k) => (
            <tr data-key-row={k.id} data-status={k.status}>
              <td class="col-name" data-label="Name">
                <span class="truncate key-name" title={k.name}>
                  {k.name}
                </span>
                {k.kind === "partner" && <span class="badge badge-muted">from your provider</span>}
              </td>
              <td data-label="Key">
                <code class="break">{k.prefix}…</code>
              </td>
              <td class="col-models" data-label="Models">
                <span class="truncate" title={k.allowed_models.join(", ")}>
                  {k.allowed_models.join(", ") || "All of your plan"}
                </span>
              </td>
              <td data-label="Status">
                <span class={`status status-${k.status}`}>{k.status}</span>
              </td>
              <td data-label="Last used" data-last-used>
                {ago(k.last_used_at)}
              </td>
              <td data-label="Actions">
                {k.kind === "customer" && k.status !== "revoked" ? (
                  <button
                    type="button"
                    class="button button-small button-danger-outline"
                    onClick={() => onRevoke(k)}
                    aria-label={`Revoke ${k.name}`}
                  >
                    Revoke
                  </button>
                ) : (
                  <span class="muted">—</span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
