// The portal's shell: who is signed in (GET /auth/session after a reload), and the page for
// the path and the user's kind. A partner's users land on AI Gateway; customers and platform
// admins on their own pages.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api, ApiError, setCsrfToken, whenUnauthenticated } from "./api";
import { AdminHome } from "./pages/AdminHome";
import { CustomerHome } from "./pages/CustomerHome";
import { Gateway } from "./pages/Gateway";
import { ApiWebhooks } from "./pages/partner/ApiWebhooks";
import { Customers } from "./pages/partner/Customers";
import { Usage } from "./pages/partner/Usage";
import { SignIn } from "./pages/SignIn";
import { navigate, usePath } from "./router";
import type { Session, User } from "./types";

export interface Signed {
  user: User;
  canWrite: boolean;
}

const HOME: Record<User["kind"], string> = { partner: "/partner/gateway", customer: "/customer", admin: "/admin" };

export function App() {
  const path = usePath();
  const [signed, setSigned] = useState<Signed | null | undefined>(undefined);
  const [loadError, setLoadError] = useState<string | null>(null);

  const signedOut = useCallback(() => {
    setCsrfToken(null);
    setSigned(null);
  }, []);

  useEffect(() => {
    whenUnauthenticated(signedOut);
    api<Session>("GET", "/auth/session", { anonymous: true })
      .then((s) => {
        setCsrfToken(s.csrf_token);
        setSigned(s.user ? { user: s.user, canWrite: s.principal.can_write } : null);
      })
      .catch((e: unknown) => {
        if (e instanceof ApiError && e.status === 401) setSigned(null);
        else setLoadError(e instanceof Error ? e.message : String(e));
      });
  }, [signedOut]);

  // where each kind of user belongs
  useEffect(() => {
    if (signed === undefined) return;
    if (signed === null) {
      if (path !== "/sign-in") navigate("/sign-in", true);
      return;
    }
    const home = HOME[signed.user.kind];
    // a partner's area has several pages under /partner/
    const area = signed.user.kind === "partner" ? "/partner/" : home;
    if (!path.startsWith(area)) navigate(home, true);
  }, [signed, path]);

  const signOut = useCallback(async () => {
    try {
      await api("POST", "/auth/sign-out");
    } finally {
      signedOut();
    }
  }, [signedOut]);

  if (loadError) {
    return (
      <main class="center-page">
        <p role="alert">The portal could not start: {loadError}</p>
      </main>
    );
  }
  if (signed === undefined) return <main class="center-page" aria-busy="true" />;
  if (signed === null) {
    return (
      <SignIn
        onSignedIn={(s) => {
          setCsrfToken(s.csrf_token);
          // a user's write rights: owners and admins of a partner, customers for their own keys
          setSigned({ user: s.user, canWrite: s.user.role !== "viewer" });
        }}
      />
    );
  }
  const user = signed.user;
  if (user.kind === "partner") {
    if (path.startsWith("/partner/usage")) return <Usage signed={signed} onSignOut={signOut} path={path} />;
    if (path.startsWith("/partner/customers")) return <Customers signed={signed} onSignOut={signOut} path={path} />;
    if (path.startsWith("/partner/api")) return <ApiWebhooks signed={signed} onSignOut={signOut} path={path} />;
    return <Gateway signed={signed} onSignOut={signOut} />;
  }
  if (user.kind === "customer") return <CustomerHome user={user} onSignOut={signOut} />;
  return <AdminHome user={user} onSignOut={signOut} />;
}
