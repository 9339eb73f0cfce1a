// Starts what the browser tests run against, like tests/support/harness.c
// does for the C integration tests: a database of its own in the PostgreSQL
// that scripts/test started (PC_TEST_PG_URL), a Redis key prefix of its own
// (PC_TEST_REDIS_URL), paysim, and one paycore node with a private copy of
// rules/ (so a test may edit cashier_rank.lua). Everything is stopped again
// by stop(), and killed if this process dies.
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const SOURCE_DIR = path.resolve(__dirname, '..', '..');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function answers(url) {
  try {
    const r = await fetch(url);
    return r.status > 0;
  } catch {
    return false;
  }
}

async function ready(url) {
  try {
    return (await fetch(url)).status === 200;
  } catch {
    return false;
  }
}

function psql(url, sql) {
  execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', sql], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
  });
}

async function startStack(opts = {}) {
  const pgUrl = process.env.PC_TEST_PG_URL;
  const redisUrl = process.env.PC_TEST_REDIS_URL;
  if (!pgUrl || !redisUrl)
    throw new Error('PC_TEST_PG_URL and PC_TEST_REDIS_URL are not set: run through scripts/test');
  const binDir = process.env.PC_BINARY_DIR || path.join(SOURCE_DIR, 'build');
  const logDir = path.join(binDir, 'test-logs');
  fs.mkdirSync(logDir, { recursive: true });

  const name = `browser_${process.pid}`;
  psql(pgUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  psql(pgUrl, `CREATE DATABASE ${name}`);
  const dbUrl = pgUrl.replace(/\/[^/]*$/, `/${name}`);

  const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'paycore-browser-rules-'));
  fs.cpSync(path.join(SOURCE_DIR, 'rules'), rulesDir, { recursive: true });

  const [httpPort, adminPort, simPort] = [await freePort(), await freePort(), await freePort()];
  const stack = {
    name,
    apiUrl: `http://127.0.0.1:${httpPort}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    simUrl: `http://127.0.0.1:${simPort}`,
    adminToken: 'browser-test-admin-token',
    tokenKey: 'browser-test-cashier-key',
    rulesDir,
    // One statement against the stack's database (-At: unaligned values only).
    sql: (q) => execFileSync('psql', [dbUrl, '-v', 'ON_ERROR_STOP=1', '-Atqc', q], { encoding: 'utf8' }).trim(),
    logs: { paycore: path.join(logDir, `${name}-paycore.log`), paysim: path.join(logDir, `${name}-paysim.log`) },
    children: [],
  };

  const child = (bin, args, env, log) => {
    const out = fs.openSync(log, 'a');
    const p = spawn(path.join(binDir, bin), args, { env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    stack.children.push(p);
    return p;
  };
  const kill = () => { for (const p of stack.children) if (p.exitCode === null) p.kill('SIGKILL'); };
  process.on('exit', kill);

  const sim = child('paysim', ['--port', String(simPort), '--seed', '7', '--callback-base', stack.apiUrl,
    '--callback-retry-ms', '200'], { ...process.env }, stack.logs.paysim);
  for (let i = 0; i < 200 && !(await answers(`${stack.simUrl}/sim/faults?channel_id=sim_card`)); i++) {
    if (sim.exitCode !== null) throw new Error(`paysim exited (see ${stack.logs.paysim})`);
    await sleep(50);
  }

  const env = {
    ...process.env,
    PAYCORE_DATABASE_URL: dbUrl,
    PAYCORE_REDIS_URL: redisUrl,
    PAYCORE_REDIS_PREFIX: `${name}:`,
    PAYCORE_HTTP_PORT: String(httpPort),
    PAYCORE_ADMIN_PORT: String(adminPort),
    PAYCORE_DEMO: 'true', // paysim's public demo channel secrets, readable challenge codes
    PAYCORE_NOTIFY_PRIVATE_TARGETS: 'true', // receivers on loopback
    PAYCORE_ADMIN_TOKEN: stack.adminToken,
    PAYCORE_CASHIER_TOKEN_KEY: stack.tokenKey,
    PAYCORE_NODE_NAME: `${name}-node0`,
    PAYCORE_RULES_DIR: rulesDir,
    PAYCORE_CHANNELS_DIR: path.join(SOURCE_DIR, 'channels'),
    PAYCORE_ACCESS_LOG: 'true', // the tests check that no card number reaches the log
    // The tests pay with the one test card of each outcome again and again
    // (a road bike of 20,000.00 among them): a card's daily limit counts
    // every payment made with it.
    PAYCORE_LIMIT_CARD_DAILY: '1000000000',
    PAYSIM_PORT: String(simPort),
    ...(opts.env || {}),
  };
  const core = child('paycore', [], env, stack.logs.paycore);
  for (let i = 0; ; i++) {
    if (core.exitCode !== null) throw new Error(`paycore exited during start (see ${stack.logs.paycore})`);
    // Ready, not only up: the node listens before its database connections
    // are made, and a first call in between is answered 503 (CI saw the
    // first merchant refused that way).
    if ((await ready(`${stack.apiUrl}/readyz`)) && (await answers(`${stack.adminUrl}/console`))) break;
    if (i > 300) throw new Error(`paycore did not come up (see ${stack.logs.paycore})`);
    await sleep(50);
  }

  stack.stop = async () => {
    for (const p of stack.children) {
      if (p.exitCode !== null) continue;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([done, sleep(5000)]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
    fs.rmSync(rulesDir, { recursive: true, force: true });
    try { psql(pgUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); } catch { /* reported by psql */ }
  };
  return stack;
}

module.exports = { startStack, SOURCE_DIR, sleep };
