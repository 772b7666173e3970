// The partner area's menu, shared by its pages.

export const PARTNER_PAGES = [
  { label: "AI Gateway", href: "/partner/gateway" },
  { label: "Usage", href: "/partner/usage" },
  { label: "Customers", href: "/partner/customers" },
  { label: "API & Webhooks", href: "/partner/api" },
] as const;

export function partnerNav(path: string): { label: string; href: string; current: boolean }[] {
  return PARTNER_PAGES.map((p) => ({ label: p.label, href: p.href, current: path === p.href || path.startsWith(p.href + "/") }));
}

/** A message for an error of any kind. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
