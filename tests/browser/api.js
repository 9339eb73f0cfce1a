// HTTP helpers for the browser tests: signed merchant calls (api.md
// "Merchant authentication"), admin calls with the bearer token, paysim's
// control API. Node's own fetch and crypto only.
'use strict';
const crypto = require('node:crypto');

async function request(method, url, headers, body) {
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

// A signed /v1/ call as merchant m ({id, secret}).
function merchantCall(stack, m, method, path, bodyObj, idemKey) {
  const body = bodyObj === undefined ? '' : JSON.stringify(bodyObj);
  const ts = String(Math.floor(Date.now() / 1000));
  const nonce = crypto.randomBytes(16).toString('hex');
  const toSign = `${method}\n${path}\n${ts}\n${nonce}\n${method === 'GET' ? '' : body}\n`;
  const sig = crypto.createHmac('sha256', m.secret).update(toSign).digest('base64');
  const headers = {
    'X-Merchant-Id': m.id, 'X-Timestamp': ts, 'X-Nonce': nonce, 'X-Signature': sig,
    'Content-Type': 'application/json',
  };
  if (method === 'POST') headers['Idempotency-Key'] = idemKey || crypto.randomUUID();
  return request(method, `${stack.apiUrl}${path}`, headers, method === 'GET' ? undefined : body);
}

function adminCall(stack, method, path, bodyObj) {
  const headers = { Authorization: `Bearer ${stack.adminToken}`, 'Content-Type': 'application/json' };
  return request(method, `${stack.adminUrl}${path}`, headers,
    bodyObj === undefined ? undefined : JSON.stringify(bodyObj));
}

function simCall(stack, method, path, bodyObj) {
  return request(method, `${stack.simUrl}${path}`, { 'Content-Type': 'application/json' },
    bodyObj === undefined ? undefined : JSON.stringify(bodyObj));
}

// The token of a cashier link for trade_no that expired at `expires`, signed
// with key: what a link looks like once its time is up.
function cashierToken(key, tradeNo, expires) {
  const mac = crypto.createHmac('sha256', key)
    .update(`paycore-cashier-v1\n${tradeNo}\n${expires}\n`).digest('base64url');
  return `${tradeNo}.${expires}.${mac}`;
}

module.exports = { request, merchantCall, adminCall, simCall, cashierToken };
