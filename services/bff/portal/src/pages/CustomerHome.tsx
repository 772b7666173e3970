// The customer's white-label portal: the partner's name, logo and colours; the AI credit
// balance; and AI Gateway (own pay-as-you-go keys, quick start, usage) in the menu only while
// all three conditions hold (GET /customer: ai_gateway.visible), else a message naming each
// one that is missing. Kept current by the live event stream (or a 5 s poll).

import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { Shell } from "../components/Shell";
import { type Branding, brandStyle, safeLogo } from "../customer/brand";
import { CustomerGateway } from "../customer/CustomerGateway";
import { type CustomerBalance, type CustomerSelf, MISSING_TEXT } from "../customer/types";
import { formatDecimal } from "../format";
import { followLive } from "../live";
import { usePath } from "../router";
import type { User } from "../types";

const GATEWAY = "/customer/gateway";

function BalanceCard({ balance }: { balance: CustomerBalance | null }) {
  const value = (v: { ai_credits: string; uai: number } | undefined) =>
    v ? (
      <span class="money" title={`${v.ai_credits} AI credits`} data-uai={v.uai}>
        {formatDecimal(v.ai_credits, 0, 2)}
      </span>
    ) : (
      <span class="muted">—</span>
    );
  return (
    <section class="card" aria-labelledby="ai-balance-title">
      <div class="card-head">
        <h2 id="ai-balance-title">AI credit balance</h2>
      </div>
      <div class="stats">
        <div class="stat stat-main" data-stat="ai-balance">
          <span class="stat-label">Balance</span>
          <span class="stat-value">{value(balance?.balance)} AI credits</span>
        </div>
        <div class="stat" data-stat="ai-available">
          <span class="stat-label">Available now</span>
          <span class="stat-value">{value(balance?.available)}</span>
        </div>
        <div class="stat" data-stat="ai-reserved">
          <span class="stat-label">Held by requests in flight</span>
          <span class="stat-value">{value(balance?.reserved)}</span>
        </div>
      </div>
      <p class="hint">Your provider adds AI credits to your account; your keys' requests are billed to them.</p>
    </section>
  );
}

function Hidden({ me }: { me: CustomerSelf }) {
  return (
    <section class="card gateway-hidden" aria-labelledby="hidden-title" data-gateway-hidden>
      <h2 id="hidden-title">AI Gateway is not available to you yet</h2>
      <p>AI Gateway appears in your menu once your provider has switched on all three of these. Still missing:</p>
      <ul>
        {me.ai_gateway.missing.map((m) => (
          <li data-missing={m}>{MISSING_TEXT[m] ?? m}</li>
        ))}
      </ul>
      <p class="hint">Ask your provider to turn these on; this page updates by itself.</p>
    </section>
  );
}

export function CustomerHome({ user, onSignOut }: { user: User; onSignOut: () => void }) {
  const path = usePath();
  const [me, setMe] = useState<CustomerSelf | null>(null);
  const [branding, setBranding] = useState<Branding | null>(null);
  const [balance, setBalance] = useState<CustomerBalance | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);

  const fail = (e: unknown) => setError(e instanceof Error ? e.message : String(e));
  const reload = useCallback(() => {
    api<CustomerSelf>("GET", "/customer").then((m) => {
      setMe(m);
      setError(null);
    }, fail);
    api<CustomerBalance>("GET", "/customer/balance").then(setBalance, fail);
    api<Branding>("GET", "/customer/branding").then(setBranding, fail);
    setTick((t) => t + 1);
  }, []);

  useEffect(() => {
    reload();
    // the usage history records a request a moment after its live event: look again shortly
    let timers: number[] = [];
    const stop = followLive({
      onEvent: () => {
        timers.forEach((t) => window.clearTimeout(t));
        timers = [400, 2000, 4500, 8000].map((ms) => window.setTimeout(reload, ms));
      },
      onReload: reload,
    });
    return () => {
      stop();
      timers.forEach((t) => window.clearTimeout(t));
    };
  }, [reload]);

  const visible = me?.ai_gateway.visible ?? false;
  const onGateway = path.startsWith(GATEWAY);
  const nav = [
    { label: "Overview", href: "/customer", current: !onGateway },
    ...(visible ? [{ label: "AI Gateway", href: GATEWAY, current: onGateway }] : []),
  ];
  const brand = branding ? { name: branding.display_name, logoUrl: safeLogo(branding.logo_url) } : { name: "", logoUrl: null };

  return (
    <div class="branded" style={brandStyle(branding)} data-branded data-brand-primary={branding?.primary_color ?? ""}>
      <Shell user={user} org={me?.name} title={onGateway ? "AI Gateway" : "Overview"} onSignOut={onSignOut} nav={nav} brand={brand}>
        {error && (
          <p class="banner banner-error" role="alert">
            {error}
          </p>
        )}
        {me === null ? (
          <p class="muted" aria-busy="true">
            Loading…
          </p>
        ) : onGateway ? (
          visible ? (
            <CustomerGateway me={me} tick={tick} onChanged={reload} />
          ) : (
            <Hidden me={me} />
          )
        ) : (
          <>
            <p class="welcome">
              Welcome, <span class="break">{me.name}</span>.
            </p>
            <div class="top-grid">
              <BalanceCard balance={balance} />
              {visible ? (
                <section class="card" aria-labelledby="gw-title" data-gateway-available>
                  <h2 id="gw-title">AI Gateway</h2>
                  <p>
                    Create your own OpenAI-compatible API keys, billed to your AI credits as you go, and follow their usage.
                  </p>
                  <a class="button button-primary" href={GATEWAY}>
                    Open AI Gateway
                  </a>
                </section>
              ) : (
                <Hidden me={me} />
              )}
            </div>
          </>
        )}
      </Shell>
    </div>
  );
}
