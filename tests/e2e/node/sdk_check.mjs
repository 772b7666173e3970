// Drives the gateway with the official openai npm package, as a Node developer would.
//
//   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-cg-... node sdk_check.mjs
//
// CG_MODEL picks the model (default gpt-4o-mini). Prints one JSON line
// {"ok", "sdk_version", "results", "failures"} and exits 1 if any check failed.
// Run by tests/e2e/test_openai_surface.py against the whole stack.

import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const baseURL = process.env.OPENAI_BASE_URL;
const apiKey = process.env.OPENAI_API_KEY;
const model = process.env.CG_MODEL || 'gpt-4o-mini';
const REPLY_START = 'Hello from the Creditgate mock upstream';

const results = {};
const failures = [];

function check(name, condition, detail) {
  if (!condition) failures.push(`${name}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
}

async function step(name, fn) {
  try {
    results[name] = await fn();
  } catch (err) {
    failures.push(`${name}: ${err?.constructor?.name ?? 'Error'} ${err?.status ?? ''} ${err?.message ?? err}`);
  }
}

async function main() {
  if (!baseURL || !apiKey) {
    console.log(JSON.stringify({ ok: false, failures: ['OPENAI_BASE_URL and OPENAI_API_KEY must be set'] }));
    process.exit(2);
  }
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
  const messages = [{ role: 'user', content: 'Say hello in five words' }];

  await step('chat', async () => {
    const { data, response } = await client.chat.completions.create({ model, messages }).withResponse();
    const content = data.choices[0].message.content;
    check('chat', content.startsWith(REPLY_START), content);
    check('chat.usage', data.usage?.completion_tokens > 0, data.usage);
    check('chat.x-request-id', !!response.headers.get('x-request-id'), 'no x-request-id');
    return { object: data.object, content, usage: data.usage, request_id: response.headers.get('x-request-id') };
  });

  await step('chat_stream', async () => {
    const stream = await client.chat.completions.create({
      model, messages, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    const usages = [];
    for await (const chunk of stream) {
      chunks += 1;
      for (const choice of chunk.choices) text += choice.delta?.content ?? '';
      if (chunk.usage) usages.push({ usage: chunk.usage, choices: chunk.choices.length });
    }
    check('chat_stream', text.startsWith(REPLY_START), text);
    check('chat_stream.usage', usages.length === 1 && usages[0].choices === 0, usages);
    return { text, chunks, usage: usages[0]?.usage ?? null };
  });

  await step('completions', async () => {
    const { data, response } = await client.completions
      .create({ model, prompt: 'Say hello', max_tokens: 5 })
      .withResponse();
    check('completions', data.object === 'text_completion' && data.choices[0].text === 'Hello from the Creditgate mock',
      data.choices[0]);
    check('completions.finish_reason', data.choices[0].finish_reason === 'length', data.choices[0]);
    check('completions.x-request-id', !!response.headers.get('x-request-id'), 'no x-request-id');
    return { text: data.choices[0].text, finish_reason: data.choices[0].finish_reason, usage: data.usage };
  });

  await step('embeddings', async () => {
    // No encoding_format: the SDK asks for base64 and decodes it to floats itself.
    const { data, response } = await client.embeddings
      .create({ model, input: ['hello world', 'second input'] })
      .withResponse();
    const vectors = data.data.map((d) => d.embedding);
    check('embeddings', vectors.length === 2 && vectors.every((v) => Array.isArray(v) && v.length === 8
      && v.every((x) => typeof x === 'number')), vectors);
    check('embeddings.x-request-id', !!response.headers.get('x-request-id'), 'no x-request-id');
    return { object: data.object, vectors, usage: data.usage };
  });

  await step('models', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    check('models', ids.includes(model), ids);
    const one = await client.models.retrieve(model);
    check('models.retrieve', one.id === model && one.object === 'model', one);
    return ids;
  });

  await step('wrong_key', async () => {
    const wrong = new OpenAI({ baseURL, apiKey: 'sk-cg-' + 'x'.repeat(40), maxRetries: 0, timeout: 20_000 });
    try {
      await wrong.chat.completions.create({ model, messages });
    } catch (err) {
      const authError = err instanceof OpenAI.AuthenticationError;
      check('wrong_key', authError && err.status === 401, { class: err?.constructor?.name, status: err?.status });
      return { class: err?.constructor?.name, status: err.status, code: err.code, authentication_error: authError };
    }
    check('wrong_key', false, 'a wrong key was accepted');
    return null;
  });

  const ok = failures.length === 0;
  console.log(JSON.stringify({ ok, sdk_version: VERSION, node: process.version, results, failures }));
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.log(JSON.stringify({ ok: false, results, failures: [...failures, `crashed: ${err?.stack ?? err}`] }));
  process.exit(1);
});
