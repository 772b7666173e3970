// The one way the portal talks to the BFF: JSON over /api/v1 with the session cookie, the
// session's CSRF token on every change, and the API's one error shape turned into ApiError.

const BASE = "/api/v1";

/** `{"error": {"code", "message", "fields"}}` from the API, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: Record<string, string> = {},
    /** Seconds, from Retry-After (429 too_many_attempts, 503 unavailable). */
    readonly retryAfterS: number | null = null,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;
let onUnauthenticated: () => void = () => {};

/** The session's CSRF token (from the sign-in answer, or GET /auth/session after a reload). */
export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called when the API answers 401 to a signed-in request: the session ended. */
export function whenUnauthenticated(handler: () => void): void {
  onUnauthenticated = handler;
}

/** A fresh Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "portal-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | null | undefined>;
  idempotencyKey?: string;
  /** Do not treat a 401 as the end of the session (sign-in itself). */
  anonymous?: boolean;
}

export async function api<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const url = new URL(BASE + path, window.location.origin);
  for (const [name, value] of Object.entries(options.query ?? {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, String(value));
  }
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: options.body === undefined ? null : JSON.stringify(options.body),
    });
  } catch {
    throw new ApiError(0, "network", "The portal cannot reach the server. Check your connection and try again.");
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (response.ok) return parsed as T;
  const error = (parsed as { error?: { code?: string; message?: string; fields?: Record<string, string> } } | null)
    ?.error;
  const retry = response.headers.get("Retry-After");
  const failure = new ApiError(
    response.status,
    error?.code ?? "http_" + response.status,
    error?.message ?? `The server answered ${response.status}.`,
    error?.fields ?? {},
    retry !== null && /^\d+$/.test(retry) ? Number(retry) : null,
  );
  if (response.status === 401 && !options.anonymous) onUnauthenticated();
  throw failure;
}
