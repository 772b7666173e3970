// An amount as people read it, with the exact figure in its title (and data-ucr for tests).

import { credits, usd } from "../format";
import type { Money as MoneyValue } from "../types";

export interface CreditsProps {
  value: MoneyValue | null;
  /** Say "credits" after the number. */
  unit?: boolean;
  /** Every decimal the API gives, not two. */
  exact?: boolean;
}

export function Credits({ value, unit = true, exact = false }: CreditsProps) {
  if (!value) return <span class="muted">—</span>;
  return (
    <span class="money" title={`${value.credits} credits ($${value.usd})`} data-ucr={value.ucr}>
      {credits(value, exact)}
      {unit && " credits"}
    </span>
  );
}

export function Usd({ value }: { value: MoneyValue | null }) {
  if (!value) return <span class="muted">—</span>;
  return (
    <span class="money" title={`$${value.usd}`} data-ucr={value.ucr}>
      {usd(value)}
    </span>
  );
}
