'use strict';
// Real-process tests of the Node bootstrap: each test starts bootstrap.js on a free loopback
// port with a function module and talks HTTP to it. Run with `node --test`.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const http = require('node:http');

const BOOTSTRAP = path.join(__dirname, 'bootstrap.js');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function request(port, method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function start(t, source, { handler = '', deps, timeout = '30', extraEnv = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubefn-node-'));
  const file = path.join(dir, 'function.js');
  fs.writeFileSync(file, source);
  const port = await freePort();
  const env = { ...process.env, PORT: String(port), KUBEFN_SOURCE: file, KUBEFN_HANDLER: handler, KUBEFN_BIND: '127.0.0.1',
    KUBEFN_FUNCTION_NAME: 'fn-under-test', KUBEFN_TIMEOUT: timeout, KUBEFN_MEMORY_LIMIT: '128Mi' };
  if (deps) env.KUBEFN_DEPS = deps;
  Object.assign(env, extraEnv);
  const child = spawn(process.execPath, [BOOTSTRAP], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => { output.stdout += d; });
  child.stderr.on('data', (d) => { output.stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null) { child.kill('SIGTERM'); await exited; }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { port, child, output, exited, call: (...args) => request(port, ...args) };
}

async function ready(replica) {
  for (let i = 0; i < 200; i += 1) {
    if (replica.child.exitCode !== null) throw new Error(`bootstrap exited ${replica.child.exitCode}: ${replica.output.stderr}`);
    try {
      const answer = await replica.call('GET', '/_/ready');
      if (answer.status === 200) return replica;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('bootstrap did not become ready');
}

async function serve(t, source, options) {
  return ready(await start(t, source, options));
}

test('module.exports = async (event, context) with event data and context', async (t) => {
  const r = await serve(t, `module.exports = async (event, context) => ({
    data: event.data, method: event.method, path: event.path, query: event.query,
    hasId: Boolean(event['event-id']), ns: event['event-namespace'],
    fn: context['function-name'], timeout: context.timeout, runtime: context.runtime.startsWith('nodejs'), memory: context['memory-limit'],
  });`);
  const answer = await r.call('POST', '/p/q?x=1', JSON.stringify({ a: 1 }), { 'content-type': 'application/json' });
  assert.equal(answer.status, 200);
  assert.equal(answer.headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(answer.body), { data: { a: 1 }, method: 'POST', path: '/p/q', query: { x: '1' }, hasId: true,
    ns: 'kubefn', fn: 'fn-under-test', timeout: 30, runtime: true, memory: '128Mi' });
});

test("OpenFaaS node template's own sample handler runs unchanged", async (t) => {
  // template/node20/function/handler.js (the same in node18 and node22).
  const r = await serve(t, `module.exports = async (event, context) => {
  const result = {
    'body': JSON.stringify(event.body),
    'content-type': event.headers["content-type"]
  }

  return context
    .status(200)
    .succeed(result)
}
`);
  const text = await r.call('POST', '/', 'hello');
  assert.equal(text.status, 200);
  assert.deepEqual(JSON.parse(text.body), { body: '"hello"', 'content-type': 'text/plain' });
  const json = await r.call('POST', '/', JSON.stringify({ a: 1 }), { 'content-type': 'application/json' });
  assert.deepEqual(JSON.parse(json.body), { body: '{"a":1}', 'content-type': 'application/json' });
  const form = await r.call('POST', '/', 'a=1&a=2&b=x', { 'content-type': 'application/x-www-form-urlencoded' });
  assert.deepEqual(JSON.parse(JSON.parse(form.body).body), { a: ['1', '2'], b: 'x' });
  // body-parser leaves a request without a body as {}.
  assert.deepEqual(JSON.parse((await r.call('GET', '/')).body), { body: '{}', 'content-type': 'text/plain' });
});

test('OpenFaaS context: status and headers, succeed, fail and the callback', async (t) => {
  const r = await serve(t, `module.exports = (event, context, callback) => {
    const kind = event.query.kind;
    if (kind === 'created') return context.status(201).headers({ 'X-Made': 'yes', 'Content-Type': 'text/csv' }).succeed('a,b');
    if (kind === 'fail') return context.fail('no such thing');
    if (kind === 'teapot') return context.status(418).fail(new Error('short and stout'));
    if (kind === 'callback') return callback(undefined, { via: 'callback', status: context.status() });
    if (kind === 'late') { setTimeout(() => callback(null, ['late', 'but', 'kept']), 20); return new Promise(() => {}); }
    if (kind === 'bad-status') return context.status('not a number').succeed('x');
    context.status(202);
    return Promise.resolve({ returned: true, query: event.query });
  };`);
  const created = await r.call('GET', '/?kind=created');
  assert.deepEqual([created.status, created.body, created.headers['x-made'], created.headers['content-type']], [201, 'a,b', 'yes', 'text/csv']);
  const failed = await r.call('GET', '/?kind=fail');
  assert.deepEqual([failed.status, failed.body], [500, 'no such thing']);
  const teapot = await r.call('GET', '/?kind=teapot');
  assert.deepEqual([teapot.status, teapot.body], [418, 'Error: short and stout']);
  const viaCallback = await r.call('GET', '/?kind=callback');
  assert.deepEqual([viaCallback.status, JSON.parse(viaCallback.body)], [200, { via: 'callback', status: 200 }]);
  assert.deepEqual(JSON.parse((await r.call('GET', '/?kind=late')).body), ['late', 'but', 'kept']);
  // A status Node refuses is the handler's bug: a 500, and the replica lives on.
  assert.equal((await r.call('GET', '/?kind=bad-status')).status, 500);
  // A caller's `__proto__` is a plain query name, never the query object's prototype.
  const returned = await r.call('GET', '/?kind=other&tag=a&tag=b&__proto__=p');
  assert.deepEqual([returned.status, JSON.parse(returned.body)],
    [202, { returned: true, query: { kind: 'other', tag: ['a', 'b'], ['__proto__']: 'p' } }]);
  assert.equal(returned.headers['content-type'], 'application/json');
});

test('RAW_BODY=true hands OpenFaaS handlers a Buffer', async (t) => {
  const r = await serve(t, `module.exports = async (event) => ({ buffer: Buffer.isBuffer(event.body), length: event.body.length });`,
    { extraEnv: { RAW_BODY: 'true' } });
  const answer = await r.call('POST', '/', JSON.stringify({ a: 1 }), { 'content-type': 'application/json' });
  assert.deepEqual(JSON.parse(answer.body), { buffer: true, length: 7 });
});

test("Kubeless nodejs runtime's own examples run unchanged", async (t) => {
  // helloget.js and hellowithdata.js from Kubeless's nodejs examples.
  const get = await serve(t, `module.exports = {
  foo: function (event, context) {
    return 'hello world';
  },
};
`, { handler: 'foo' });
  assert.deepEqual([(await get.call('GET', '/')).status, (await get.call('GET', '/')).body], [200, 'hello world']);
  const withData = await serve(t, `module.exports = {
  handler: (event, context) => {
    console.log(event);
    return event.data;
  },
};
`, { handler: 'handler' });
  const echoed = await withData.call('POST', '/', JSON.stringify({ hello: 'world' }), { 'content-type': 'application/json' });
  assert.deepEqual([echoed.status, JSON.parse(echoed.body)], [200, { hello: 'world' }]);
  assert.equal((await withData.call('POST', '/', 'plain')).body, 'plain');
});

test('strings are text, statusCode objects set status and headers', async (t) => {
  const r = await serve(t, `module.exports = async (event) => event.data === 'created'
    ? { statusCode: 201, headers: { 'X-Made': 'yes' }, body: 'made' }
    : 'hello ' + event.data;`);
  const text = await r.call('POST', '/', 'world');
  assert.deepEqual([text.status, text.body, text.headers['content-type']], [200, 'hello world', 'text/plain; charset=utf-8']);
  const made = await r.call('POST', '/', 'created');
  assert.deepEqual([made.status, made.body, made.headers['x-made']], [201, 'made', 'yes']);
});

test('a named export picked by the handler field (Kubeless style)', async (t) => {
  const r = await serve(t, `module.exports = {
    other() { return 'wrong'; },
    hello(event, context) { return 'hello from ' + context['function-name']; },
  };`, { handler: 'hello' });
  assert.equal((await r.call('GET', '/')).body, 'hello from fn-under-test');
  assert.match(r.output.stdout, /using hello\(event, context\) as configured/);
});

test('Express-style (req, res) handlers', async (t) => {
  const r = await serve(t, `module.exports = (req, res) => {
    res.status(202).set('X-Seen', req.body.name).json({ got: req.body, method: req.method });
  };`);
  const answer = await r.call('PUT', '/e', JSON.stringify({ name: 'ada' }), { 'content-type': 'application/json' });
  assert.equal(answer.status, 202);
  assert.equal(answer.headers['x-seen'], 'ada');
  assert.deepEqual(JSON.parse(answer.body), { got: { name: 'ada' }, method: 'PUT' });
  assert.match(r.output.stdout, /detected module\.exports\(req, res\) \(Express style\)/);
});

test('a single exported function is detected and the choice logged', async (t) => {
  const r = await serve(t, `exports.greet = async (event) => 'hi ' + event.data;`);
  assert.equal((await r.call('POST', '/', 'bo')).body, 'hi bo');
  assert.match(r.output.stdout, /no handler configured; detected greet\(event, context\)/);
});

test('a thrown error is a 500 and the replica keeps serving', async (t) => {
  const r = await serve(t, `module.exports = async (event) => {
    if (event.data === 'boom') throw new TypeError('bad input: boom');
    return 'fine';
  };`);
  const failed = await r.call('POST', '/', 'boom');
  assert.equal(failed.status, 500);
  assert.match(failed.body, /TypeError: bad input: boom/);
  assert.match(r.output.stderr, /the handler threw TypeError/);
  assert.equal((await r.call('POST', '/', 'ok')).body, 'fine');
});

test('a handler past its timeout gets a 504 and the replica keeps serving', async (t) => {
  const r = await serve(t, `module.exports = async (event) => {
    if (event.data === 'hang') await new Promise((resolve) => setTimeout(resolve, 3000));
    return 'quick';
  };`, { timeout: '0.5' });
  const started = Date.now();
  const late = await r.call('POST', '/', 'hang');
  assert.equal(late.status, 504);
  assert.match(late.body, /did not answer within its timeout of 0.5 s/);
  assert.ok(Date.now() - started < 2500, 'answered at the timeout, not when the handler finished');
  assert.equal((await r.call('POST', '/', 'ok')).body, 'quick');
  assert.match(r.output.stderr, /did not answer within 0.5 s/);
});

test('requests are served concurrently', async (t) => {
  // Every call waits until four are inside the handler at once; one at a time would never finish.
  const r = await serve(t, `let waiting = []; module.exports = () => new Promise((resolve) => {
    waiting.push(resolve);
    if (waiting.length === 4) { waiting.forEach((done) => done('together')); waiting = []; }
  });`);
  const answers = await Promise.all([1, 2, 3, 4].map(() => r.call('GET', '/')));
  assert.deepEqual(answers.map((a) => a.body), ['together', 'together', 'together', 'together']);
});

test('modules from the dependencies directory can be required', async (t) => {
  const deps = fs.mkdtempSync(path.join(os.tmpdir(), 'kubefn-deps-'));
  t.after(() => fs.rmSync(deps, { recursive: true, force: true }));
  fs.mkdirSync(path.join(deps, 'greeting-lib'));
  fs.writeFileSync(path.join(deps, 'greeting-lib', 'index.js'), "module.exports = 'from-deps';");
  const r = await serve(t, `const word = require('greeting-lib'); module.exports = () => word;`, { deps });
  assert.equal((await r.call('GET', '/')).body, 'from-deps');
});

async function loadFailure(t, source, options) {
  const r = await start(t, source, options);
  assert.equal(await r.exited, 3);
  return r.output.stderr;
}

test('bad functions exit with status 3 and say why', async (t) => {
  assert.match(await loadFailure(t, 'module.exports = async (event => {'), /syntax error in the function source/);
  assert.match(await loadFailure(t, 'module.exports = { a() {}, b() {} };'), /several functions are exported \(a, b\)/);
  assert.match(await loadFailure(t, 'module.exports = 42;'), /no handler found/);
  assert.match(await loadFailure(t, 'module.exports = () => 1;', { handler: 'missing' }), /the handler 'missing' is not exported/);
  assert.match(await loadFailure(t, "require('surely-not-installed-xyz');"), /declare it in package.json/);
  assert.match(await loadFailure(t, "throw new Error('nope');"), /threw while loading: nope/);
});

async function healthy(replica) {
  for (let i = 0; i < 200; i += 1) {
    try {
      if ((await replica.call('GET', '/_/health')).status === 200) return replica;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('warm process did not start');
}

test('a warm process takes a function once and then serves it', async (t) => {
  const r = await healthy(await start(t, '', { extraEnv: { KUBEFN_POOL: '1', KUBEFN_SOURCE: '' } }));
  assert.equal((await r.call('GET', '/_/ready')).status, 503);
  assert.equal((await r.call('POST', '/', 'x')).status, 503);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubefn-warm-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const source = path.join(dir, 'late.js');
  fs.writeFileSync(source, "module.exports = async (event) => `${process.env.GREETING} ${event.data} in ${process.cwd()}`;\n");
  const job = JSON.stringify({ source, env: { GREETING: 'hej' }, dir, timeout_s: 5 });
  assert.equal((await r.call('POST', '/_/specialize', job)).status, 200);
  assert.equal((await r.call('GET', '/_/ready')).status, 200);
  assert.equal((await r.call('POST', '/', 'ada')).body, `hej ada in ${fs.realpathSync(dir)}`);
  assert.equal((await r.call('POST', '/_/specialize', job)).status, 409);
});

test('a function that cannot load ends the warm process', async (t) => {
  const r = await healthy(await start(t, '', { extraEnv: { KUBEFN_POOL: '1', KUBEFN_SOURCE: '' } }));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubefn-warm-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const source = path.join(dir, 'broken.js');
  fs.writeFileSync(source, 'module.exports = async (event => 1;\n');
  const answer = await r.call('POST', '/_/specialize', JSON.stringify({ source }));
  assert.equal(answer.status, 422);
  assert.match(answer.body, /syntax error/);
  assert.equal(await r.exited, 3);
});

/** Sends an upgrade request on a raw connection; resolves with the socket and the head. */
function upgradeRequest(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write('GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    let data = '';
    const onData = (chunk) => {
      data += chunk;
      const end = data.indexOf('\r\n\r\n');
      if (end >= 0) {
        socket.off('data', onData);
        resolve({ socket, head: data.slice(0, end), rest: data.slice(end + 4) });
      }
    };
    socket.on('data', onData);
    socket.on('error', reject);
  });
}

test('an exported upgrade(req, socket, head) takes WebSocket upgrades; without one they get 501', async (t) => {
  const r = await serve(t, `const crypto = require('crypto');
    module.exports = {
      handle: async () => 'plain',
      upgrade(req, socket) {
        const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
        socket.on('data', (d) => socket.write('echo:' + d));
      },
    };`);
  assert.equal((await r.call('POST', '/', 'x')).body, 'plain', 'the request handler is still handle');
  const { socket, head } = await upgradeRequest(r.port);
  t.after(() => socket.destroy());
  assert.match(head, /^HTTP\/1.1 101/);
  assert.match(head, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/);
  const echoed = new Promise((resolve) => socket.once('data', (d) => resolve(String(d))));
  socket.write('ping');
  assert.equal(await echoed, 'echo:ping');

  const plain = await serve(t, 'module.exports = async () => "no sockets";');
  const refused = await upgradeRequest(plain.port);
  t.after(() => refused.socket.destroy());
  assert.match(refused.head, /^HTTP\/1.1 501/);
});

test('serves on a Unix socket (the local runtime sandbox has no network of its own)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubefn-sock-'));
  const file = path.join(dir, 'function.js');
  fs.writeFileSync(file, 'module.exports = async (event) => `path ${event.path}`;\n');
  const socketPath = path.join(dir, 'http.sock');
  const env = { ...process.env, KUBEFN_SOCKET: socketPath, KUBEFN_SOURCE: file };
  delete env.PORT;
  const child = spawn(process.execPath, [BOOTSTRAP], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null) { child.kill('SIGTERM'); await exited; }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let answer;
  for (let i = 0; i < 200 && !answer; i += 1) {
    try {
      answer = await new Promise((resolve, reject) => {
        const req = http.request({ socketPath, method: 'GET', path: '/over/the/socket', agent: false }, (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
        });
        req.on('error', reject);
        req.end();
      });
    } catch { await new Promise((r) => setTimeout(r, 50)); }
  }
  assert.equal(answer.status, 200);
  assert.equal(answer.body, 'path /over/the/socket');
  child.kill('SIGTERM');
  assert.equal(await exited, 0, 'SIGTERM ends an idle replica cleanly');
});
