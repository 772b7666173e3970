// The frame of a signed-in page: the product, the menu, who is signed in, sign-out.

import type { ComponentChildren } from "preact";
import type { User } from "../types";

export interface ShellProps {
  user: User;
  title: string;
  /** The organisation shown beside the product name (the partner's name). */
  org?: string | undefined;
  onSignOut: () => void;
  nav?: { label: string; href: string; current: boolean }[];
  /** White-label: the partner's name (and logo) in place of the product's. */
  brand?: { name: string; logoUrl: string | null } | undefined;
  children: ComponentChildren;
}

export function Shell({ user, title, org, onSignOut, nav = [], brand, children }: ShellProps) {
  return (
    <div class="shell">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <div class="brand">
          {brand ? (
            <span class="brand-name brand-custom" data-brand-name>
              {/* an image only (never HTML); alt="" as the name beside it says it */}
              {brand.logoUrl && <img class="brand-logo" src={brand.logoUrl} alt="" referrerpolicy="no-referrer" data-brand-logo />}
              <span class="truncate" title={brand.name}>
                {brand.name}
              </span>
            </span>
          ) : (
            <span class="brand-name">Creditgate</span>
          )}
          {org && (
            <span class="brand-org truncate" title={org}>
              {org}
            </span>
          )}
        </div>
        {nav.length > 0 && (
          <nav aria-label="Main" class="topnav">
            {nav.map((item) => (
              <a href={item.href} aria-current={item.current ? "page" : undefined}>
                {item.label}
              </a>
            ))}
          </nav>
        )}
        <div class="whoami">
          <span class="truncate" title={user.email}>
            {user.email}
          </span>
          <button type="button" class="button button-small" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" class="page" tabIndex={-1}>
        <h1>{title}</h1>
        {children}
      </main>
    </div>
  );
}
