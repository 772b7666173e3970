import { Credits, Usd } from "../components/Money";
import type { Partner } from "../types";

export function BalanceCard({ partner }: { partner: Partner }) {
  return (
    <section class="card balance" aria-labelledby="balance-title">
      <div class="card-head">
        <h2 id="balance-title">Credit balance</h2>
        <span class="badge" title={`Tier ${partner.tier}: ${partner.fee_percent}% platform fee on key budgets`}>
          {partner.tier} · {partner.fee_percent}% fee
        </span>
      </div>
      <div class="stats">
        <div class="stat stat-main" data-stat="balance">
          <span class="stat-label">Balance</span>
          <span class="stat-value">
            <Credits value={partner.balance} />
          </span>
          <span class="stat-sub">
            <Usd value={partner.balance} />
          </span>
        </div>
        <div class="stat" data-stat="reserved">
          <span class="stat-label">Reserved</span>
          <span class="stat-value">
            <Credits value={partner.reserved} />
          </span>
          <span class="stat-sub">
            <Usd value={partner.reserved} />
          </span>
        </div>
        <div class="stat" data-stat="spent">
          <span class="stat-label">Spent this month</span>
          <span class="stat-value">
            <Credits value={partner.spent_this_month} />
          </span>
          <span class="stat-sub">
            <Usd value={partner.spent_this_month} />
          </span>
        </div>
      </div>
      <p class="hint">
        100 credits = $1.00. To buy credits, ask your platform administrator for a deposit.
        {partner.status === "suspended" && <strong> Your account is suspended: every key is refused.</strong>}
      </p>
    </section>
  );
}
