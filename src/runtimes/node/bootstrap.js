'use strict';
// kubefn's Node bootstrap: serves one function over HTTP on $PORT, with core modules only.
//
// The same file runs as a local replica and inside a pod. It loads the function's module and
// adapts the common handler conventions so existing functions run unchanged:
//   module.exports = async (event, context) => ...     the default export (OpenFaaS node18/20/22)
//   module.exports = { hello(event, context) {...} }   a named export, picked by the handler field (Kubeless)
//   module.exports = (req, res) => {...}               Express-style, with res.status/send/json/set
// An (event, context) handler gets one event and one context that answer both OpenFaaS's node
// templates and Kubeless's nodejs runtime, read from their entrypoints:
//   event.body, .headers, .method, .query, .path   OpenFaaS (body as body-parser reads it: text as
//                                                  a string, JSON and forms parsed, RAW_BODY=true a Buffer)
//   event.data, ['event-id'], ['event-type'], ['event-time'], ['event-namespace'], .extensions
//                                                  Kubeless (data: JSON parsed, anything else a string)
//   context.status(), .headers(), .succeed(), .fail(), and the callback (err, result) as third
//   argument                                       OpenFaaS
//   context['function-name'], .timeout, .runtime, ['memory-limit']   Kubeless
// The answer is the value given to succeed()/the callback or, when neither was called, the
// returned value, with the status and headers set on the context: objects and arrays as JSON,
// strings as text, Buffers as bytes. kubefn differs from those templates on purpose in three
// places (the README lists them): a thrown error or one handed to fail() or the callback is a
// 500 unless the handler set another status (OpenFaaS keeps 200 for thrown errors), JSON and
// text answers say application/json and text/plain (Express would say text/html), and a body of
// a type body-parser skips (say application/octet-stream) arrives as a Buffer instead of {}.
// kubefn's own addition: a returned {statusCode, body, headers} is read as the response.
// A module may also export `upgrade(req, socket, head)`, Node's own 'upgrade' handler, to take
// WebSocket (or other HTTP upgrade) connections, e.g. with the ws package's
// `new WebSocketServer({ noServer: true }).handleUpgrade(req, socket, head, ...)`.
//
// Environment: PORT or KUBEFN_SOCKET (a Unix socket file to listen on instead: the local
// runtime's sandboxed replicas have no network of their own), KUBEFN_SOURCE (the module's path), KUBEFN_HANDLER (entry point; empty to
// detect one, and the choice is logged), KUBEFN_DEPS (a node_modules directory), KUBEFN_BIND
// (default 0.0.0.0), KUBEFN_TIMEOUT (seconds before an invocation is answered with 504,
// default 60), KUBEFN_FUNCTION_NAME, KUBEFN_MEMORY_LIMIT. With KUBEFN_POOL=1 and no source it
// starts as a warm pool process; POST /_/specialize {source, handler, deps, env, dir, timeout_s}
// loads the function later.
// Reserved paths: GET /_/ready and GET /_/health. A function that cannot be loaded makes the
// process exit with status 3 after saying why on stderr; a handler that throws answers 500
// with the message and the process keeps serving.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');
const Module = require('node:module');

const LOAD_ERROR_EXIT = 3;
const READY_PATH = '/_/ready';
const HEALTH_PATH = '/_/health';
const SPECIALIZE_PATH = '/_/specialize';
const DETECT_ORDER = ['handler', 'handle', 'main', 'default'];

class LoadError extends Error {}

function log(message) {
  process.stdout.write(`kubefn: ${message}\n`);
}

function parameterNames(fn) {
  const text = Function.prototype.toString.call(fn);
  const match = text.match(/^[^(]*\(([^)]*)\)/) || text.match(/^(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/);
  if (!match) return [];
  return match[1].split(',').map((p) => p.replace(/\/\*.*?\*\//g, '').split('=')[0].trim()).filter(Boolean);
}

function conventionOf(name, fn) {
  const params = parameterNames(fn);
  const express = params.length >= 2 && /^(req|request)$/i.test(params[0]) && /^(res|response)$/i.test(params[1]);
  if (express) return ['express', `${name}(req, res) (Express style)`];
  return ['event', `${name}(event, context)`];
}

function loadFunction(source, handlerName, depsDir) {
  const loaded = pickHandler(source, handlerName, depsDir);
  // require() caches the module, so this is the object pickHandler looked at.
  const exported = require(path.resolve(source));
  loaded.upgrade = exported && typeof exported.upgrade === 'function' ? exported.upgrade : null;
  if (loaded.upgrade) log('upgrade(req, socket, head) exported: HTTP upgrades (WebSocket) go to it');
  return loaded;
}

function pickHandler(source, handlerName, depsDir) {
  if (depsDir) {
    // Dependencies are installed once per version outside the source directory.
    process.env.NODE_PATH = [depsDir, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
    Module._initPaths();
  }
  let exported;
  try {
    exported = require(path.resolve(source));
  } catch (error) {
    if (error instanceof SyntaxError) {
      const where = (error.stack || '').split('\n')[0];
      throw new LoadError(`syntax error in the function source: ${error.message} (${where})`);
    }
    const missing = error && error.code === 'MODULE_NOT_FOUND' && String(error.message).match(/Cannot find module '([^']+)'/);
    if (missing && missing[1] === path.resolve(source)) {
      throw new LoadError(`cannot read the function source at ${source}`);
    }
    if (missing) {
      throw new LoadError(`the function requires '${missing[1]}', which is not installed; declare it in package.json`);
    }
    throw new LoadError(`the function source threw while loading: ${error && error.message}`);
  }
  if (handlerName) {
    let target = exported;
    for (const part of handlerName.split('.')) {
      target = target == null ? undefined : target[part];
    }
    if (typeof target !== 'function' && typeof exported === 'function' && (handlerName === exported.name || handlerName === 'default')) {
      target = exported;
    }
    if (typeof target !== 'function') {
      throw new LoadError(`the handler '${handlerName}' is not exported by the function source`);
    }
    const [convention, description] = conventionOf(handlerName, target);
    log(`using ${description} as configured`);
    return { convention, fn: target };
  }
  if (typeof exported === 'function') {
    const [convention, description] = conventionOf('module.exports', exported);
    log(`no handler configured; detected ${description}`);
    return { convention, fn: exported };
  }
  // `upgrade` is the upgrade handler, never the request handler.
  const functions = Object.entries(exported || {}).filter(([name, value]) => typeof value === 'function' && name !== 'upgrade');
  const chosen = functions.length === 1 ? functions[0] : functions.find(([name]) => DETECT_ORDER.includes(name));
  if (!chosen) {
    const names = functions.map(([name]) => name).join(', ');
    throw new LoadError(names
      ? `several functions are exported (${names}); set the function's handler field to one of them`
      : 'no handler found: export a function (module.exports = async (event, context) => ...) or set the handler field');
  }
  const [convention, description] = conventionOf(chosen[0], chosen[1]);
  log(`no handler configured; detected ${description}`);
  return { convention, fn: chosen[1] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function mediaType(contentType) {
  return String(contentType || '').split(';')[0].trim().toLowerCase();
}

function isJson(contentType) {
  const type = mediaType(contentType);
  return type === 'application/json' || type === 'text/json' || type.endsWith('+json');
}

/** The body as OpenFaaS's node templates hand it over (their body-parser set-up). */
function openfaasBody(contentType, body) {
  if (body.length === 0) return {};
  if (process.env.RAW_BODY === 'true') return body;
  // The templates treat a request without a content type as text/plain.
  const type = mediaType(contentType) || 'text/plain';
  if (isJson(type)) return safeJson(body);
  if (type.startsWith('text/')) return body.toString('utf8');
  if (type === 'application/x-www-form-urlencoded') return queryObject(new URLSearchParams(body.toString('utf8')));
  return body;
}

/** A query string (or form) as Express reads one: a string per name, an array for a repeated name. */
function queryObject(params) {
  const values = new Map();
  for (const [name, value] of params) {
    const seen = values.get(name);
    values.set(name, seen === undefined ? value : [].concat(seen, value));
  }
  // fromEntries defines own properties, so a name like __proto__ stays a plain key.
  return Object.fromEntries(values);
}

function makeEvent(req, res, url, body) {
  // OpenFaaS's templates give a request without a content type text/plain, in its headers too.
  if (!req.headers['content-type']) req.headers['content-type'] = 'text/plain';
  let data = body.toString('utf8');
  if (isJson(req.headers['content-type']) && body.length > 0) {
    try { data = JSON.parse(data); } catch { /* not JSON after all: keep the text */ }
  }
  return {
    data,
    body: openfaasBody(req.headers['content-type'], body),
    rawBody: body,
    method: req.method,
    path: url.pathname,
    query: queryObject(url.searchParams),
    headers: req.headers,
    'event-id': req.headers['x-request-id'] || crypto.randomUUID(),
    'event-type': req.headers['event-type'] || req.headers['content-type'] || '',
    'event-time': new Date().toISOString(),
    'event-namespace': req.headers['event-namespace'] || 'kubefn',
    extensions: { request: req, response: res },
  };
}

/**
 * The context of an (event, context) handler: Kubeless's keys, and the methods of OpenFaaS's
 * FunctionContext, whose succeed() and fail() answer through `done(err, value)`.
 */
class FunctionContext {
  constructor(timeoutS, done) {
    this['function-name'] = process.env.KUBEFN_FUNCTION_NAME || '';
    this.timeout = timeoutS;
    this.runtime = `nodejs${process.versions.node.split('.')[0]}`;
    this['memory-limit'] = process.env.KUBEFN_MEMORY_LIMIT || '';
    this.statusCode = 200;
    this.headerValues = {};
    this.cbCalled = 0;
    // Not enumerable: a handler that logs or returns its context shows Kubeless's keys.
    Object.defineProperty(this, 'done', { value: done });
  }

  status(statusCode) {
    if (!statusCode) return this.statusCode;
    this.statusCode = statusCode;
    return this;
  }

  headers(value) {
    if (!value) return this.headerValues;
    this.headerValues = value;
    return this;
  }

  succeed(value) {
    this.cbCalled++;
    this.done(undefined, value);
  }

  fail(value) {
    this.cbCalled++;
    this.done(value === undefined || value === null ? new Error('the function failed') : value);
  }
}

/** Answers an (event, context) call: an error, or a value with the context's status and headers. */
function answerEvent(res, context, error, value) {
  // The callback may run in a later tick, outside the request's try: a bad status or header
  // from the handler must become a 500, not an uncaught exception that ends the replica.
  try {
    answerEventOrThrow(res, context, error, value);
  } catch (failure) {
    fail(res, failure);
  }
}

function answerEventOrThrow(res, context, error, value) {
  if (res.headersSent || res.writableEnded) return;
  if (error !== undefined && error !== null) {
    if (Number(context.status()) === 200) context.status(500);
    const text = typeof error.toString === 'function' ? error.toString() : String(error);
    process.stderr.write(`kubefn: the function failed: ${error && error.stack ? error.stack : text}\n`);
    send(res, Number(context.status()), context.headers(), text);
    return;
  }
  const untouched = context.statusCode === 200 && Object.keys(context.headerValues).length === 0;
  if (untouched && value && typeof value === 'object' && !Buffer.isBuffer(value) && 'statusCode' in value) {
    sendResult(res, value);
    return;
  }
  send(res, Number(context.status()), context.headers(), value);
}

function send(res, status, headers, payload) {
  if (res.headersSent || res.writableEnded) return;
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  let body = payload;
  if (body === undefined || body === null) {
    body = Buffer.alloc(0);
  } else if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    lower['content-type'] = lower['content-type'] || 'application/octet-stream';
  } else if (typeof body === 'string') {
    lower['content-type'] = lower['content-type'] || 'text/plain; charset=utf-8';
  } else {
    lower['content-type'] = lower['content-type'] || 'application/json';
    body = JSON.stringify(body);
  }
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  lower['content-length'] = String(bytes.length);
  res.writeHead(status, lower);
  res.end(bytes);
}

function sendResult(res, result) {
  if (result && typeof result === 'object' && !Buffer.isBuffer(result) && 'statusCode' in result) {
    send(res, Number(result.statusCode), result.headers || {}, result.body);
  } else {
    send(res, 200, {}, result);
  }
}

function expressify(req, res, body) {
  req.body = isJson(req.headers['content-type']) && body.length > 0 ? safeJson(body) : body.toString('utf8');
  req.rawBody = body;
  res.status = (code) => { res.statusCode = code; return res; };
  res.set = (name, value) => { res.setHeader(name, value); return res; };
  res.send = (payload) => { send(res, res.statusCode || 200, res.getHeaders(), payload); return res; };
  res.json = (payload) => { res.setHeader('content-type', 'application/json'); return res.send(JSON.stringify(payload)); };
}

function safeJson(body) {
  try { return JSON.parse(body.toString('utf8')); } catch { return body.toString('utf8'); }
}

function fail(res, error) {
  const message = error && error.message ? error.message : String(error);
  const name = error && error.name ? error.name : 'Error';
  process.stderr.write(`kubefn: the handler threw ${name}: ${message}\n${error && error.stack ? error.stack + '\n' : ''}`);
  if (!res.headersSent) {
    send(res, 500, { 'content-type': 'text/plain; charset=utf-8' }, `${name}: ${message}\n`);
  } else {
    res.destroy();
  }
}

/** Answers 504 if the handler has not answered within the timeout; a late answer is dropped. */
function enforceTimeout(res, timeoutS) {
  const timer = setTimeout(() => {
    if (res.headersSent || res.writableEnded) return;
    process.stderr.write(`kubefn: the handler did not answer within ${timeoutS} s; answered 504\n`);
    send(res, 504, { 'content-type': 'text/plain; charset=utf-8' }, `the function did not answer within its timeout of ${timeoutS} s\n`);
  }, timeoutS * 1000);
  res.on('close', () => clearTimeout(timer));
}

/**
 * Loads the function into this warm process (once): what a cold start would have done at
 * launch, minus starting Node. A function that cannot load ends the process, since half-run
 * module code may linger in it.
 */
function specialize(state, body, res) {
  if (state.loaded) {
    send(res, 409, { 'content-type': 'text/plain' }, 'already specialized\n');
    return;
  }
  try {
    const job = JSON.parse(body.toString('utf8'));
    Object.assign(process.env, job.env || {});
    if (job.dir) process.chdir(job.dir);
    if (job.timeout_s) state.timeoutS = Number(job.timeout_s);
    state.loaded = loadFunction(job.source, String(job.handler || '').trim(), job.deps);
    log(`ready on ${state.where}`);
    send(res, 200, { 'content-type': 'text/plain' }, 'specialized\n');
  } catch (error) {
    process.stderr.write(`kubefn: cannot load the function: ${error.message}\n`);
    send(res, 422, { 'content-type': 'text/plain; charset=utf-8' }, `${error.message}\n`);
    setTimeout(() => process.exit(LOAD_ERROR_EXIT), 50);
  }
}

function serve(state) {
  return http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://localhost');
      if (url.pathname === HEALTH_PATH || (url.pathname === READY_PATH && state.loaded)) {
        send(res, 200, { 'content-type': 'text/plain' }, 'ok');
        return;
      }
      if (url.pathname === SPECIALIZE_PATH && req.method === 'POST') {
        specialize(state, await readBody(req), res);
        return;
      }
      if (!state.loaded) {
        send(res, 503, { 'content-type': 'text/plain' }, 'this warm process has no function yet\n');
        return;
      }
      const { convention, fn } = state.loaded;
      enforceTimeout(res, state.timeoutS);
      const body = await readBody(req);
      if (convention === 'express') {
        expressify(req, res, body);
        await fn(req, res);
        return;
      }
      const context = new FunctionContext(state.timeoutS, (error, value) => answerEvent(res, context, error, value));
      const callback = (error, value) => { context.cbCalled++; answerEvent(res, context, error, value); };
      const result = await fn(makeEvent(req, res, url, body), context, callback);
      if (!context.cbCalled && !res.headersSent) answerEvent(res, context, undefined, result);
    } catch (error) {
      fail(res, error);
    }
  });
}

function main() {
  const port = process.env.PORT;
  const socketPath = process.env.KUBEFN_SOCKET;
  const source = process.env.KUBEFN_SOURCE;
  const warm = process.env.KUBEFN_POOL === '1';
  if (!(port || socketPath) || !(source || warm)) {
    process.stderr.write('kubefn: PORT (or KUBEFN_SOCKET) and KUBEFN_SOURCE (or KUBEFN_POOL=1) must be set\n');
    process.exit(LOAD_ERROR_EXIT);
  }
  const state = { loaded: null, timeoutS: Number(process.env.KUBEFN_TIMEOUT || 60) };
  if (!(state.timeoutS > 0)) {
    process.stderr.write(`kubefn: KUBEFN_TIMEOUT must be a positive number of seconds (got ${process.env.KUBEFN_TIMEOUT})\n`);
    process.exit(LOAD_ERROR_EXIT);
  }
  if (source) {
    try {
      state.loaded = loadFunction(source, (process.env.KUBEFN_HANDLER || '').trim(), process.env.KUBEFN_DEPS);
    } catch (error) {
      process.stderr.write(`kubefn: cannot load the function: ${error.message}\n`);
      process.exit(LOAD_ERROR_EXIT);
    }
  }
  // A rejected promise the handler forgot about must not take the replica down.
  process.on('unhandledRejection', (reason) => process.stderr.write(`kubefn: unhandled rejection: ${reason && reason.stack ? reason.stack : reason}\n`));
  const server = serve(state);
  server.keepAliveTimeout = 65_000;
  // Upgraded connections leave the HTTP server's hands but keep it from closing: a stop ends them.
  const upgraded = new Set();
  server.on('upgrade', (req, socket, head) => {
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
    const upgrade = state.loaded && state.loaded.upgrade;
    if (!upgrade) {
      const text = 'this function takes no upgrades: export upgrade(req, socket, head) to accept WebSockets\n';
      socket.end(`HTTP/1.1 501 Not Implemented\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
      return;
    }
    try {
      upgrade(req, socket, head);
    } catch (error) {
      process.stderr.write(`kubefn: upgrade handler failed: ${error && error.stack ? error.stack : error}\n`);
      socket.destroy();
    }
  });
  const where = socketPath ? `socket ${socketPath}` : `port ${port}`;
  state.where = where;
  const listening = source ? `ready on ${where}` : `warm on ${where}, waiting for a function`;
  if (socketPath) {
    // A socket file left by an earlier process of this replica would make listen() fail.
    fs.rmSync(socketPath, { force: true });
    server.listen(socketPath, () => log(listening));
  } else {
    server.listen(Number(port), process.env.KUBEFN_BIND || '0.0.0.0', () => log(listening));
  }
  const stop = () => {
    server.close(() => process.exit(0));
    for (const socket of upgraded) socket.destroy();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) {
  main();
}

module.exports = { parameterNames, conventionOf };
