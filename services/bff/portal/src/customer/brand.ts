// White-label colours: the partner's #rrggbb as CSS variables on the customer's pages, with
// text colours chosen for contrast (WCAG ratios), so any colour a partner picks stays readable.

const HEX = /^#([0-9a-f]{6})$/i;

function rgb(hex: string): [number, number, number] | null {
  const m = HEX.exec(hex);
  if (!m || !m[1]) return null;
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function luminance([r, g, b]: [number, number, number]): number {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

function contrast(a: [number, number, number], b: [number, number, number]): number {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p) as [number, number];
  return (x + 0.05) / (y + 0.05);
}

function hex([r, g, b]: [number, number, number]): string {
  return "#" + [r, g, b].map((c) => Math.round(c).toString(16).padStart(2, "0")).join("");
}

const WHITE: [number, number, number] = [255, 255, 255];
const BLACK: [number, number, number] = [0, 0, 0];

/** The colour darkened until it reads on white (4.5:1), for links and text. */
export function readableOnWhite(color: string): string {
  let c = rgb(color);
  if (!c) return color;
  for (let i = 0; i < 20 && contrast(c, WHITE) < 4.5; i++) c = [c[0] * 0.85, c[1] * 0.85, c[2] * 0.85];
  return hex(c);
}

/** Black or white, whichever reads better on the colour. */
export function inkOn(color: string): string {
  const c = rgb(color);
  if (!c) return "#ffffff";
  return contrast(c, WHITE) >= contrast(c, BLACK) ? "#ffffff" : "#000000";
}

export interface Branding {
  partner_id: string;
  display_name: string;
  custom_name: boolean;
  logo_url: string | null;
  primary_color: string | null;
  accent_color: string | null;
  updated_at: string | null;
}

/** CSS variables for a branded subtree (Preact sets `--*` keys with setProperty). */
export function brandStyle(b: Branding | null): Record<string, string> {
  const style: Record<string, string> = {};
  if (b?.primary_color && rgb(b.primary_color)) {
    style["--brand-fill"] = b.primary_color;
    style["--brand-ink"] = inkOn(b.primary_color);
    style["--brand"] = readableOnWhite(b.primary_color);
  }
  if (b?.accent_color && rgb(b.accent_color)) {
    style["--accent"] = b.accent_color;
    style["--accent-ink"] = inkOn(b.accent_color);
  }
  return style;
}

/** The logo URL, if it is one the API would have accepted (https:, or a data: image). */
export function safeLogo(url: string | null): string | null {
  if (!url) return null;
  return /^https:\/\//i.test(url) || /^data:image\/(png|jpeg|gif|webp);base64,/i.test(url) ? url : null;
}
