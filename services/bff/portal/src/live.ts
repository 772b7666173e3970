// Live updates: the API's server-sent events (GET /api/v1/events), and a 5 s poll while the
// stream is down. Nothing is replayed on reconnect, so a (re)connection asks for a reload.

export type LiveEvent = "usage" | "balance" | "key";

export interface LiveHandlers {
  /** An event arrived (its JSON data). */
  onEvent: (event: LiveEvent, data: unknown) => void;
  /** Reload everything from the REST routes (on connect, and every poll). */
  onReload: () => void;
  onState?: (state: "live" | "polling") => void;
}

const POLL_MS = 5000;

export function followLive(handlers: LiveHandlers): () => void {
  let source: EventSource | null = null;
  let poll: number | null = null;
  let retry: number | null = null;
  let stopped = false;

  const startPolling = () => {
    if (poll === null) {
      poll = window.setInterval(handlers.onReload, POLL_MS);
      handlers.onState?.("polling");
    }
  };
  const stopPolling = () => {
    if (poll !== null) window.clearInterval(poll);
    poll = null;
  };
  const connect = () => {
    if (stopped) return;
    source = new EventSource("/api/v1/events", { withCredentials: true });
    source.onopen = () => {
      stopPolling();
      handlers.onState?.("live");
      handlers.onReload();
    };
    source.onerror = () => {
      startPolling();
      if (source && source.readyState === EventSource.CLOSED) {
        // refused (403, 503 without NATS): the browser gives up; try again later ourselves
        source = null;
        retry = window.setTimeout(connect, 15000);
      }
    };
    for (const event of ["usage", "balance", "key"] as const) {
      source.addEventListener(event, (message: MessageEvent<string>) => {
        let data: unknown = null;
        try {
          data = JSON.parse(message.data);
        } catch {
          data = null;
        }
        handlers.onEvent(event, data);
      });
    }
  };
  connect();
  return () => {
    stopped = true;
    source?.close();
    stopPolling();
    if (retry !== null) window.clearTimeout(retry);
  };
}
