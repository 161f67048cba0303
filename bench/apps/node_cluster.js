// The Node.js peer: the built-in `cluster` module, the primary relaying every worker.send to
// every worker (the sender included), JSON on the IPC channel (Node's default serialization).
// Usage: STEREO_BENCH_SPEC='{...}' node node_cluster.js
//
// It mirrors bench/apps/_spec.py by hand: the same spec, the same ["r"]/["d"] messages
// (as {k, id} / {k, t, p} objects), the same result file and `@bench` progress lines.
// process.hrtime.bigint() reads CLOCK_MONOTONIC, as Python's time.monotonic_ns() does, so send
// times taken here compare with receipt times in other processes.
'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const path = require('node:path');

const spec = JSON.parse(process.env.STEREO_BENCH_SPEC);
const BATCH = 64;

function nowNs() {
  // A Number loses integer precision past 2**53 ns (104 days of uptime), a few ns at worst.
  return Number(process.hrtime.bigint());
}

function runPrimary() {
  const workers = [];
  for (let i = 1; i <= spec.workers; i++) {
    workers.push(cluster.fork({ STEREO_BENCH_ID: String(i) }));
  }
  const relay = (message) => {
    for (const w of workers) {
      if (w.isConnected()) w.send(message);
    }
  };
  for (const w of workers) {
    w.on('message', relay);
    // A finished worker disconnects; a send racing with that must not kill the primary.
    w.on('error', () => {});
  }
  let exited = 0;
  cluster.on('exit', () => {
    exited += 1;
    if (exited === workers.length) process.exit(0);
  });
}

function runWorker() {
  const id = Number(process.env.STEREO_BENCH_ID);
  const payload = 'x'.repeat(spec.payload);
  const latencyMode = spec.mode === 'latency';
  const expected = latencyMode ? spec.count : spec.workers * spec.count;
  const toSend = latencyMode ? (id === 1 ? spec.count : 0) : spec.count;
  const latencies = [];
  let readies = 0;
  let received = 0;
  let startNs = 0;
  let lastNs = 0;
  let finished = false;
  let deadline = null;

  const finish = () => {
    if (finished) return;
    finished = true;
    if (deadline !== null) clearTimeout(deadline);
    const result = {
      id, start_ns: startNs, last_ns: lastNs, received, expected, latencies_ns: latencies,
    };
    fs.writeFileSync(path.join(spec.out_dir, `worker-${id}.json`), JSON.stringify(result));
    console.log(`@bench done id=${id} received=${received}`);
    process.disconnect();
  };

  const sendBatches = (sent) => {
    if (sent >= toSend || finished) return;
    const end = Math.min(toSend, sent + BATCH);
    for (let i = sent; i < end - 1; i++) process.send({ k: 'd', t: nowNs(), p: payload });
    // Wait for the batch to be written before the next one, which also lets receipts in.
    process.send({ k: 'd', t: nowNs(), p: payload }, () => sendBatches(end));
  };

  const sendPaced = () => {
    const start = nowNs();
    let i = 0;
    const tick = () => {
      if (i >= toSend || finished) return;
      process.send({ k: 'd', t: nowNs(), p: payload });
      i += 1;
      const due = start + i * (1e9 / spec.rate);
      setTimeout(tick, Math.max(0, (due - nowNs()) / 1e6));
    };
    tick();
  };

  process.on('message', (m) => {
    if (m.k === 'd') {
      const t = nowNs();
      received += 1;
      lastNs = t;
      if (latencyMode) latencies.push(t - m.t);
      if (received >= expected) finish();
    } else if (m.k === 'r') {
      readies += 1;
      if (readies === spec.workers) {
        startNs = nowNs();
        console.log(`@bench go id=${id}`);
        deadline = setTimeout(finish, spec.timeout * 1000);
        if (latencyMode) sendPaced();
        else sendBatches(0);
      }
    }
  });
  process.send({ k: 'r', id });
}

if (cluster.isPrimary) runPrimary();
else runWorker();
