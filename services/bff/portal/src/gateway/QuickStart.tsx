// The SDK quick start: the same call in Python, Node.js and cURL, with the gateway's base URL
// and the key just created (or a placeholder).

import { useState } from "preact/hooks";
import { CopyButton } from "../components/CopyButton";

type Lang = "python" | "node" | "curl";
const LABELS: Record<Lang, string> = { python: "Python", node: "Node.js", curl: "cURL" };

export function snippet(lang: Lang, baseUrl: string, key: string, model: string): string {
  switch (lang) {
    case "python":
      return `from openai import OpenAI

client = OpenAI(base_url="${baseUrl}", api_key="${key}")
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`;
    case "node":
      return `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${baseUrl}", apiKey: "${key}" });
const reply = await client.chat.completions.create({
  model: "${model}",
  messages: [{ role: "user", content: "Hello" }],
});
console.log(reply.choices[0].message.content);`;
    case "curl":
      return `curl ${baseUrl}/chat/completions \\
  -H "Authorization: Bearer ${key}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`;
  }
}

export function QuickStart({ baseUrl, secret, model }: { baseUrl: string; secret: string | null; model: string }) {
  const [lang, setLang] = useState<Lang>("python");
  const key = secret ?? "sk-cg-your-key";
  const code = snippet(lang, baseUrl, key, model);
  const langs = Object.keys(LABELS) as Lang[];
  const onKey = (event: KeyboardEvent, index: number) => {
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    const next = langs[(index + step + langs.length) % langs.length];
    if (next) {
      setLang(next);
      document.getElementById(`qs-tab-${next}`)?.focus();
    }
  };
  return (
    <section class="card quickstart" aria-labelledby="qs-title">
      <div class="card-head">
        <h2 id="qs-title">Quick start</h2>
        <span class="hint">
          Use the OpenAI SDK with base URL <code class="break">{baseUrl}</code>
        </span>
      </div>
      <div role="tablist" aria-label="Language" class="tabs">
        {langs.map((l, i) => (
          <button
            type="button"
            role="tab"
            id={`qs-tab-${l}`}
            aria-selected={lang === l}
            aria-controls="qs-panel"
            tabIndex={lang === l ? 0 : -1}
            onClick={() => setLang(l)}
            onKeyDown={(e) => onKey(e, i)}
          >
            {LABELS[l]}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="qs-panel" aria-labelledby={`qs-tab-${lang}`} class="code-block">
        {/* focusable: a long line scrolls sideways, and the keyboard must reach it */}
        <pre data-snippet={lang} tabIndex={0}>
          <code>{code}</code>
        </pre>
        <CopyButton text={code} label={`Copy ${LABELS[lang]}`} />
      </div>
      {!secret && <p class="hint">Create a key below: its secret appears in these snippets.</p>}
    </section>
  );
}
