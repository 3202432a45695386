// Drives a running `moesys serve` with the official OpenAI Node.js client:
// models, completions and chat (whole and streamed, with usage), and the
// errors the client raises for an unknown model and a bad parameter.
// MOESYS_URL is the server's base URL, MOESYS_MODEL the model id. Prints
// one line per check and exits non-zero at the first failure.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.env.MOESYS_URL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
const model = process.env.MOESYS_MODEL;
const finishes = ['stop', 'length'];
let checks = 0;
const ok = (what) => { checks++; console.log(`ok ${checks} ${what}`); };

const models = await client.models.list();
assert.deepEqual(models.data.map((m) => m.id), [model]);
ok('models.list');

const prompt = 'func main() {';
const c = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
assert.equal(c.object, 'text_completion');
assert.equal(c.choices.length, 1);
assert.ok(finishes.includes(c.choices[0].finish_reason), c.choices[0].finish_reason);
assert.equal(c.usage.prompt_tokens, prompt.length); // byte-level tokenizer, no BOS
assert.ok(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 12);
ok('completions.create');

let streamed = '';
let finish = null;
for await (const chunk of await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stream: true })) {
  streamed += chunk.choices[0]?.text ?? '';
  finish = chunk.choices[0]?.finish_reason ?? finish;
}
assert.equal(streamed, c.choices[0].text);
assert.equal(finish, c.choices[0].finish_reason);
ok('completions.create stream: same text');

const messages = [{ role: 'system', content: 'You write Go.' }, { role: 'user', content: 'Print hello.' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, seed: 7 });
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices[0].message.role, 'assistant');
assert.equal(typeof chat.choices[0].message.content, 'string');
assert.ok(finishes.includes(chat.choices[0].finish_reason));
ok('chat.completions.create');

let content = '';
let usage = null;
let role = null;
const stream = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
for await (const chunk of stream) {
  role ??= chunk.choices[0]?.delta?.role ?? null;
  content += chunk.choices[0]?.delta?.content ?? '';
  usage = chunk.usage ?? usage;
}
assert.equal(role, 'assistant');
assert.equal(content, chat.choices[0].message.content);
assert.deepEqual(usage, chat.usage);
ok('chat.completions.create stream with usage: same message');

await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), (err) => {
  assert.ok(err instanceof OpenAI.NotFoundError, String(err));
  assert.equal(err.status, 404);
  assert.equal(err.code, 'model_not_found');
  return true;
});
ok('unknown model: NotFoundError 404');

await assert.rejects(client.completions.create({ model, prompt, temperature: 7 }), (err) => {
  assert.ok(err instanceof OpenAI.BadRequestError, String(err));
  assert.equal(err.status, 400);
  assert.equal(err.param, 'temperature');
  assert.equal(err.type, 'invalid_request_error');
  return true;
});
ok('bad temperature: BadRequestError 400');

console.log(`${checks} passed, 0 failed`);
