#!/usr/bin/env node
// A proxyless gRPC client on @grpc/grpc-js with @grpc/grpc-js-xds, driven by legate's tests
// (tests/tests/grpc_clients.rs). Same protocol as client.py:
//
//   NODE_PATH=<node_modules> GRPC_XDS_BOOTSTRAP=bootstrap.json node client.js --proto greeter.proto [--xds-creds]
//
// With --xds-creds the clients use XdsChannelCredentials with a plaintext fallback (the TLS the
// control plane sends for a cluster, gRFC A29, is used); without it they are plaintext.
//
// prints {"ready": true}, then answers one JSON line per JSON command line on stdin:
//   {"op": "call", "target": "xds:///payments", "n": 10, "metadata": {...}, "timeout": 5}
//     -> {"results": [{"ok": true, "instance": "a"}, {"ok": false, "code": "UNAVAILABLE", ...}]}
//   {"op": "quit"}
'use strict';

const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

const protoFlag = process.argv.indexOf('--proto');
if (protoFlag < 0 || !process.argv[protoFlag + 1]) {
  console.error('usage: client.js --proto greeter.proto');
  process.exit(2);
}
const xdsCreds = process.argv.includes('--xds-creds');
xds.register();
const definition = protoLoader.loadSync(process.argv[protoFlag + 1], { keepCase: true });
const Greeter = grpc.loadPackageDefinition(definition).helloworld.Greeter;

const clients = new Map();
function client(target) {
  if (!clients.has(target)) {
    const insecure = grpc.credentials.createInsecure();
    const creds = xdsCreds ? new xds.XdsChannelCredentials(insecure) : insecure;
    clients.set(target, new Greeter(target, creds));
  }
  return clients.get(target);
}

function call(greeter, i, metadata, timeoutSeconds) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata || {})) md.add(k, String(v));
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    greeter.SayHello({ name: `call-${i}` }, md, { deadline }, (err, reply) => {
      if (err) {
        resolve({ ok: false, code: grpc.status[err.code] || String(err.code), details: err.details });
      } else {
        resolve({ ok: true, instance: reply.instance });
      }
    });
  });
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  reply({ ready: true, grpc: require('@grpc/grpc-js/package.json').version });
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.op === 'quit') break;
    if (cmd.op !== 'call') {
      reply({ error: `unknown op ${cmd.op}` });
      continue;
    }
    const greeter = client(cmd.target);
    const results = [];
    for (let i = 0; i < (cmd.n || 1); i++) {
      results.push(await call(greeter, i, cmd.metadata, cmd.timeout || 5));
    }
    reply({ results });
  }
  for (const c of clients.values()) c.close();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
