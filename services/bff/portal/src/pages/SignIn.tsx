import { useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { described, errorFor, Field } from "../components/Field";
import type { SignedIn } from "../types";

function waitText(seconds: number | null): string {
  if (seconds === null) return "later";
  if (seconds < 90) return `in ${seconds} seconds`;
  return `in ${Math.ceil(seconds / 60)} minutes`;
}

export function SignIn({ onSignedIn }: { onSignedIn: (s: SignedIn) => void }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});

  const submit = async (event: Event) => {
    event.preventDefault();
    const missing: Record<string, string> = {};
    if (!email.trim()) missing["email"] = "Enter your email.";
    if (!password) missing["password"] = "Enter your password.";
    setFields(missing);
    setError(null);
    if (Object.keys(missing).length) return;
    setBusy(true);
    try {
      onSignedIn(await api<SignedIn>("POST", "/auth/sign-in", { body: { email: email.trim(), password }, anonymous: true }));
    } catch (e) {
      if (e instanceof ApiError && e.code === "invalid_credentials") setError("Wrong email or password.");
      else if (e instanceof ApiError && e.status === 429)
        setError(`Too many failed attempts. Try again ${waitText(e.retryAfterS)}.`);
      else if (e instanceof ApiError && Object.keys(e.fields).length) setFields(e.fields);
      else setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };

  const emailError = errorFor(fields, "email");
  const passwordError = errorFor(fields, "password");
  return (
    <main class="center-page">
      <form class="card signin" onSubmit={submit} noValidate aria-labelledby="signin-title">
        <p class="brand-name">Creditgate</p>
        <h1 id="signin-title">Sign in</h1>
        {error && (
          <p class="form-error" role="alert" data-signin-error>
            {error}
          </p>
        )}
        <Field label="Email" id="signin-email" error={emailError}>
          <input
            {...described("signin-email", emailError)}
            type="email"
            name="email"
            autocomplete="username"
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
            required
          />
        </Field>
        <Field label="Password" id="signin-password" error={passwordError}>
          <input
            {...described("signin-password", passwordError)}
            type="password"
            name="password"
            autocomplete="current-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
            required
          />
        </Field>
        <button type="submit" class="button button-primary button-block" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
