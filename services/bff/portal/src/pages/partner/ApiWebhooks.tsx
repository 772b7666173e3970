// The partner's API & Webhooks page: management API tokens and webhook endpoints.

import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { Shell } from "../../components/Shell";
import { messageOf, partnerNav } from "../../partner/nav";
import { Tokens } from "../../partner/Tokens";
import { Webhooks } from "../../partner/Webhooks";
import type { Partner } from "../../types";
import type { PartnerPageProps } from "./Usage";

export function ApiWebhooks({ signed, onSignOut, path }: PartnerPageProps) {
  const [partner, setPartner] = useState<Partner | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<Partner>("GET", "/partner").then(setPartner, (e) => setError(messageOf(e)));
  }, []);
  // tokens are made and revoked by owners and admins, signed in
  const canManage = signed.user.role === "owner" || signed.user.role === "admin";
  return (
    <Shell user={signed.user} org={partner?.name} title="API & Webhooks" onSignOut={onSignOut} nav={partnerNav(path)}>
      {error && (
        <p class="banner banner-error" role="alert">
          {error}
        </p>
      )}
      <Tokens canManage={canManage} />
      <Webhooks canWrite={signed.canWrite} />
    </Shell>
  );
}
