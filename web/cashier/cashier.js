// The hosted cashier page. Everything it knows comes from this page's own
// server (same origin, under the link's path): the trade and its latest
// payment (api/status), the methods in the order rules/cashier_rank.lua gave
// (api/consult), and the payment (api/pay). Card details are sent to api/pay
// and kept in memory only as long as a challenge may need them again; they
// are never logged or stored in the browser.
'use strict';

(function () {
  const base = location.pathname.replace(/\/+$/, '') + '/api/';
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;

  const state = {
    trade: null,
    methods: [],
    selected: null,      // method_id of the chosen whole-amount method
    addBalance: false,   // a partial balance combined with another method
    coupon: null,        // coupon_id combined with the method
    payment: null,
    card: null,          // the card of a payment waiting for its challenge
    pollTimer: null,
    busy: false,
  };

  // ---------- small helpers ----------

  function deviceId() {
    try {
      let id = localStorage.getItem('pc_device');
      if (!id) {
        const a = new Uint8Array(12);
        crypto.getRandomValues(a);
        id = 'web-' + Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
        localStorage.setItem('pc_device', id);
      }
      return id;
    } catch (e) {
      return 'web-anonymous';
    }
  }

  function client() {
    const phone = window.matchMedia('(max-width: 640px)').matches;
    return { platform: phone ? 'H5' : 'WEB', device_id: deviceId() };
  }

  // Minor units to text (static/money.js: the currency's ISO 4217 digits).
  function money(amount, currency) {
    return (amount < 0 ? '−' : '') + currency + ' ' + window.pcMinorText(amount, currency);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function show(id) {
    for (const s of ['choose', 'follow', 'challenge', 'result'])
      $(s).hidden = s !== id;
  }

  function notice(text, info) {
    const n = $('notice');
    n.hidden = !text;
    n.textContent = text || '';
    n.classList.toggle('info', !!info);
  }

  async function api(method, path, body) {
    const opts = { method, headers: {}, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(base + path, opts);
    } catch (e) {
      return { status: 0, json: null };
    }
    let json = null;
    try { json = await res.json(); } catch (e) { /* empty */ }
    return { status: res.status, json };
  }

  function errorText(r) {
    if (r.status === 0) return 'Cannot reach the payment server. Check your connection and try again.';
    if (r.status === 401) return 'This payment link is no longer valid. Ask the shop for a new one.';
    const e = r.json && r.json.error;
    return e ? e.message.charAt(0).toUpperCase() + e.message.slice(1) + '.' : 'Something went wrong (' + r.status + ').';
  }

  const REASONS = {
    INSUFFICIENT_BALANCE: 'Not enough balance',
    LIMIT_EXCEEDED: 'Over your payment limit',
    CHANNEL_UNAVAILABLE: 'Temporarily unavailable',
    MIN_AMOUNT_NOT_MET: 'Order too small for this coupon',
    BUYER_BLOCKED: 'Not available for your account',
  };
  const FAILURES = {
    CARD_DECLINED: 'Your card was declined by your bank',
    INSUFFICIENT_FUNDS: 'Your card does not have enough funds',
    PROCESSING_ERROR: 'Your bank could not process the payment',
    EXPIRED_CARD: 'Your card has expired',
    RISK_REJECTED: 'This payment could not be accepted',
    REVIEW_REJECTED: 'This payment was not approved',
    EXPIRED: 'The time to finish this payment ran out',
  };
  const COMPONENTS = {
    BALANCE: 'Balance', COUPON: 'Coupon', CARD: 'Card', QUICK_PAY: 'Saved card', AGREEMENT: 'Agreement',
    NETBANK: 'Net banking', VA: 'Bank transfer', OTC: 'Paid at a store', WALLET: 'Wallet',
    QR_MERCHANT: 'Scan to pay', QR_BUYER: 'Payment code',
  };
  const TRADE_STATES = {
    WAIT_BUYER_PAY: 'Waiting for payment',
    PAY_SUCCESS: 'Paid — held safely until the shop delivers',
    TRADE_SUCCESS: 'Paid',
    TRADE_FINISHED: 'Paid and completed',
    TRADE_CLOSED: 'Closed',
  };

  // ---------- the trade ----------

  function renderSummary(t) {
    $('merchant').textContent = t.merchant_name || '';
    $('subject').textContent = t.subject;
    $('amount').textContent = money(t.amount, t.currency);
    document.title = 'Pay ' + money(t.amount, t.currency) + ' — ' + (t.merchant_name || 'checkout');
    if (t.status === 'WAIT_BUYER_PAY' && t.expires_at) {
      const when = new Date(t.expires_at);
      $('expiry').textContent = 'Order no. ' + t.out_trade_no + ' · pay before ' +
        when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    } else {
      $('expiry').textContent = 'Order no. ' + t.out_trade_no;
    }
  }

  // ---------- choosing a method ----------

  // Balance or a coupon that cannot pay the whole amount is offered as
  // something to combine with another method, in the place the rule put it.
  function isAddOn(m) {
    return (m.type === 'BALANCE' || m.type === 'COUPON') && m.max_amount < state.trade.amount;
  }

  function methodById(id) {
    return state.methods.find((m) => m.method_id === id);
  }

  // The card and payment-code forms open under the method they belong to.
  const FORMS = { CARD: 'card-form', QR_BUYER: 'code-form' };

  function renderMethods() {
    const list = $('methods');
    for (const id of Object.values(FORMS)) $('choose').append($(id)); // keep them while redrawing
    list.textContent = '';
    for (const m of state.methods) {
      const addOn = isAddOn(m);
      const input = el('input', {
        type: addOn ? 'checkbox' : 'radio',
        name: addOn ? 'addon' : 'method',
        value: m.method_id,
      });
      input.disabled = !m.available;
      if (addOn) {
        input.checked = m.type === 'BALANCE' ? state.addBalance
          : state.coupon === (m.coupon && m.coupon.coupon_id);
      } else {
        input.checked = state.selected === m.method_id;
      }
      input.addEventListener('change', () => choose(m, input.checked));
      const name = el('span', { class: 'name', text: m.label });
      if (m.recommended) name.append(el('span', { class: 'tag', text: 'Recommended' }));
      let side = null;
      if (!m.available) side = el('span', { class: 'side', text: REASONS[m.reason] || m.reason || 'Unavailable' });
      else if (addOn) side = el('span', { class: 'side', text: 'use ' + money(m.max_amount, state.trade.currency) });
      const li = el('li', {
        class: 'method' + (m.available ? '' : ' unavailable') + (input.checked ? ' selected' : ''),
        'data-method-id': m.method_id,
        'data-type': m.type,
      }, el('label', {}, input, name, side));
      if (input.checked && FORMS[m.type]) li.append($(FORMS[m.type]));
      list.append(li);
    }
    renderChoice();
  }

  function choose(m, checked) {
    if (!isAddOn(m)) {
      state.selected = m.method_id;
    } else if (m.type === 'BALANCE') {
      state.addBalance = checked;
    } else {
      state.coupon = checked ? m.coupon.coupon_id : null; // one coupon at a time
    }
    renderMethods();
  }

  function couponAmount() {
    const c = state.methods.find((m) => m.coupon && m.coupon.coupon_id === state.coupon);
    return c ? Math.min(c.coupon.amount, state.trade.amount) : 0;
  }

  function balanceAmount(main) {
    if (!state.addBalance || !main || main.type === 'BALANCE' || main.type === 'COUPON') return 0;
    const b = state.methods.find((m) => m.type === 'BALANCE');
    // Something must be left for the channel.
    return b ? Math.max(0, Math.min(b.max_amount, state.trade.amount - couponAmount() - 1)) : 0;
  }

  function renderChoice() {
    const main = methodById(state.selected);
    $('card-form').hidden = !main || main.type !== 'CARD';
    $('code-form').hidden = !main || main.type !== 'QR_BUYER';
    const t = state.trade;
    const bd = $('breakdown');
    bd.textContent = '';
    const coupon = main && main.type !== 'COUPON' ? couponAmount() : 0;
    const balance = balanceAmount(main);
    if (main && (coupon || balance)) {
      bd.append(el('div', {}, el('span', { text: 'Order' }), el('span', { text: money(t.amount, t.currency) })));
      if (coupon) bd.append(el('div', {}, el('span', { text: 'Coupon' }), el('span', { text: money(-coupon, t.currency) })));
      if (balance) bd.append(el('div', {}, el('span', { text: 'Balance' }), el('span', { text: money(-balance, t.currency) })));
      bd.append(el('div', { class: 'total' }, el('span', { text: main.label }),
        el('span', { text: money(t.amount - coupon - balance, t.currency) })));
    }
    const pay = $('pay');
    pay.disabled = !main || state.busy;
    const due = main ? t.amount - (main.type === 'COUPON' ? 0 : coupon) - balance : t.amount;
    pay.textContent = main ? 'Pay ' + money(main.type === 'COUPON' ? 0 : due, t.currency) : 'Choose a method';
  }

  function readCard() {
    const pan = $('card-pan').value.replace(/[\s-]/g, '');
    const exp = $('card-exp').value.replace(/\s/g, '');
    const cvv = $('card-cvv').value.trim();
    const m = /^(\d{1,2})\/?(\d{2}|\d{4})$/.exec(exp);
    if (!/^\d{12,19}$/.test(pan)) return { error: 'Enter the card number.' };
    if (!m || +m[1] < 1 || +m[1] > 12) return { error: 'Enter the expiry as MM/YY.' };
    if (!/^\d{3,4}$/.test(cvv)) return { error: 'Enter the 3 or 4 digit security code.' };
    const year = m[2].length === 2 ? 2000 + +m[2] : +m[2];
    const card = { pan, exp_month: +m[1], exp_year: year, cvv };
    const name = $('card-name').value.trim();
    if (name) card.holder_name = name;
    return { card };
  }

  function clearCard() {
    for (const id of ['card-pan', 'card-exp', 'card-cvv']) $(id).value = '';
    state.card = null;
  }

  async function payNow() {
    const main = methodById(state.selected);
    if (!main || state.busy) return;
    const body = { method_id: main.method_id, client: client() };
    if (main.type !== 'COUPON' && state.coupon) body.coupon_id = state.coupon;
    const balance = balanceAmount(main);
    if (balance > 0) body.balance_amount = balance;
    if (main.type === 'CARD') {
      const c = readCard();
      if (c.error) { notice(c.error); return; }
      body.card = c.card;
    }
    if (main.type === 'QR_BUYER') {
      const code = $('buyer-code').value.trim();
      if (!code) { notice('Enter the payment code your wallet app shows.'); return; }
      body.buyer_code = code;
    }
    notice('');
    state.busy = true;
    renderChoice();
    $('pay').textContent = 'Paying…';
    const r = await api('POST', 'pay', body);
    state.busy = false;
    if (r.status !== 200) {
      notice(errorText(r));
      renderChoice();
      if (r.status === 409) refresh();
      return;
    }
    // A card stays in memory only while its challenge is open.
    state.card = r.json.status === 'PROCESSING' && r.json.action && r.json.action.type === 'CHALLENGE'
      ? body.card || null : null;
    if (main.type === 'CARD' && !state.card) clearCard();
    showPayment(r.json);
  }

  async function loadMethods() {
    const r = await api('POST', 'consult', { client: client() });
    if (r.status !== 200) {
      notice(errorText(r));
      show(null);
      return;
    }
    state.methods = r.json.methods || [];
    const first = state.methods.find((m) => m.available && m.recommended && !isAddOn(m)) ||
      state.methods.find((m) => m.available && !isAddOn(m));
    if (!methodById(state.selected) || !methodById(state.selected).available)
      state.selected = first ? first.method_id : null;
    show('choose');
    renderMethods();
  }

  // ---------- after pay ----------

  function stopPolling() {
    if (state.pollTimer) clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  function poll() {
    stopPolling();
    state.pollTimer = setTimeout(async () => {
      const r = await api('GET', 'status');
      if (r.status === 200) {
        state.trade = r.json.trade;
        renderSummary(state.trade);
        if (r.json.payment) {
          showPayment(r.json.payment, true);
          return;
        }
      } else if (r.status === 401) {
        notice(errorText(r));
        return;
      }
      poll();
    }, POLL_MS);
  }

  function followBox(label, value, extra) {
    return el('div', { class: 'follow-box' }, el('span', { class: 'label', text: label }),
      el('span', { class: 'big', 'data-testid': 'follow-value', text: value }), extra || null);
  }

  function showFollowUp(p) {
    const a = p.action || {};
    const body = $('follow-body');
    const key = p.payment_no + ':' + (a.type || '') + ':' + p.status;
    if (body.dataset.key === key) return; // already shown: keep the QR image and links steady
    body.dataset.key = key;
    body.textContent = '';
    const t = state.trade;
    const due = money(p.amount - p.components.filter((c) => c.type === 'COUPON' || c.type === 'BALANCE')
      .reduce((s, c) => s + c.amount, 0), t.currency);
    const expires = a.expires_at ? 'Valid until ' + new Date(a.expires_at).toLocaleString() + '.' : '';
    if (p.status === 'REVIEW') {
      $('follow-title').textContent = 'Your payment is being checked';
      body.append(el('p', { text: 'We are making sure everything is in order. This usually takes a few minutes; you can keep this page open or come back to this link later.' }));
    } else if (a.type === 'VA') {
      $('follow-title').textContent = 'Pay by bank transfer';
      body.append(el('p', { text: 'Transfer exactly ' + due + ' to this virtual account from your banking app.' }),
        followBox('Virtual account number' + (a.bank_code ? ' · bank ' + a.bank_code : ''), a.va_number),
        el('p', { class: 'fineprint', text: expires }));
    } else if (a.type === 'OTC') {
      $('follow-title').textContent = 'Pay at a store';
      body.append(el('p', { text: 'Show this code at the counter of any ' + (a.store_network || 'partner') + ' store and pay ' + due + ' in cash.' }),
        followBox('Payment code', a.otc_code), el('p', { class: 'fineprint', text: expires }));
    } else if (a.type === 'QR') {
      $('follow-title').textContent = 'Scan to pay';
      const img = el('img', { class: 'qr', alt: 'QR code to scan with your wallet app', 'data-testid': 'qr',
        src: base + 'qr.svg?p=' + encodeURIComponent(p.payment_no) });
      body.append(el('p', { text: 'Open your wallet app and scan this code to pay ' + due + '.' }),
        el('div', { class: 'follow-box' }, img), el('p', { class: 'fineprint', text: expires }));
    } else if (a.type === 'REDIRECT') {
      $('follow-title').textContent = a.three_ds ? 'Confirm with your bank' : 'Continue at your bank';
      const ok = /^https?:\/\//i.test(a.url || '');
      body.append(el('p', { text: 'Finish the payment of ' + due + ' on the page of your bank or wallet, then come back here.' }));
      if (ok) body.append(el('a', { class: 'button-link', href: a.url, target: '_blank', rel: 'noopener noreferrer', text: 'Open the payment page' }));
      if (a.app_link) body.append(el('p', { class: 'fineprint', text: 'On your phone you can also open the wallet app.' }));
    } else {
      $('follow-title').textContent = 'Processing your payment';
      body.append(el('p', { text: 'Your payment of ' + due + ' is on its way. It can take a moment to be confirmed.' }));
    }
  }

  function detail(dl, name, value) {
    dl.append(el('dt', { text: name }), el('dd', { text: value }));
  }

  function showResult(p) {
    stopPolling();
    const t = state.trade;
    t.status = p.trade_status;
    renderSummary(t);
    const badge = $('result-badge');
    const dl = $('result-details');
    dl.textContent = '';
    badge.className = 'badge';
    if (p.error_refund) {
      badge.classList.add('warn');
      badge.textContent = '↺';
      $('result-title').textContent = 'Trade closed, your money will be returned';
      $('result-text').textContent = 'This order was closed or already paid before your payment arrived. ' +
        'The full ' + money(p.amount, t.currency) + ' is being returned to you automatically.';
    } else {
      badge.textContent = '✓';
      $('result-title').textContent = 'Payment successful';
      $('result-text').textContent = money(p.amount, t.currency) + ' paid to ' + (t.merchant_name || 'the shop') + '.';
    }
    detail(dl, 'Order status', TRADE_STATES[p.trade_status] || p.trade_status);
    for (const c of p.components || [])
      detail(dl, (c.type === 'CARD' || c.type === 'QUICK_PAY') && p.card ? p.card.brand + ' ••' + p.card.last4
        : COMPONENTS[c.type] || c.type, money(c.amount, t.currency));
    detail(dl, 'Payment no.', p.payment_no);
    detail(dl, 'Order no.', t.out_trade_no);
    show('result');
    goBack();
  }

  // After a final result (paid, or the order closed) the shop may have asked
  // for the buyer back: the server gives its return_url with the signed
  // result (api/return), and the page goes there after a moment. The shop
  // must not take that visit as proof of payment.
  const RETURN_DELAY_MS = 1500;

  async function goBack() {
    if (state.returning) return;
    state.returning = true;
    for (let i = 0; i < 5; i++) {
      const r = await api('GET', 'return');
      if (r.status === 200 && r.json && r.json.url) {
        $('result-back-link').href = r.json.url;
        $('result-back').hidden = false;
        setTimeout(() => location.assign(r.json.url), RETURN_DELAY_MS);
        return;
      }
      if (r.status !== 409) break; // no return_url, or the link expired
      await new Promise((done) => setTimeout(done, 1000));
    }
    state.returning = false;
  }

  function showPayment(p, fromPoll) {
    state.payment = p;
    if (p.status === 'SUCCESS') {
      notice('');
      showResult(p);
      return;
    }
    if (p.status === 'FAILED') {
      stopPolling();
      state.card = null;
      const f = p.failure || {};
      const why = FAILURES[f.code] || f.message || 'The payment did not go through';
      notice(why + (f.code ? ' (' + f.code + ')' : '') + '. Choose another way to pay, or try again.');
      if (fromPoll && state.shownFailure === p.payment_no) return;
      state.shownFailure = p.payment_no;
      if (state.trade.status === 'WAIT_BUYER_PAY') loadMethods();
      else showClosed();
      return;
    }
    // PROCESSING or REVIEW.
    if (p.action && p.action.type === 'CHALLENGE') {
      stopPolling();
      if (!fromPoll || $('challenge').hidden) {
        $('challenge-code').value = '';
        show('challenge');
        $('challenge-code').focus();
      }
      return;
    }
    show('follow');
    showFollowUp(p);
    poll();
  }

  async function answerChallenge(ev) {
    ev.preventDefault();
    const p = state.payment;
    const code = $('challenge-code').value.trim();
    if (!p || !code) return;
    const body = { challenge_id: p.action.challenge_id, challenge_answer: code, client: client() };
    if (state.card) body.card = state.card;
    $('challenge-submit').disabled = true;
    const r = await api('POST', 'pay', body);
    $('challenge-submit').disabled = false;
    if (r.status !== 200) {
      notice(errorText(r));
      return;
    }
    notice('');
    state.card = null;
    clearCard();
    showPayment(r.json);
  }

  function showClosed() {
    stopPolling();
    const t = state.trade;
    const badge = $('result-badge');
    badge.className = 'badge bad';
    badge.textContent = '✕';
    $('result-title').textContent = t.status === 'TRADE_CLOSED' ? 'This order is closed' : 'Nothing left to pay';
    $('result-text').textContent = t.status === 'TRADE_CLOSED'
      ? 'It can no longer be paid. Go back to the shop to order again.'
      : 'Order status: ' + (TRADE_STATES[t.status] || t.status) + '.';
    $('result-details').textContent = '';
    show('result');
    if (t.status === 'TRADE_CLOSED') goBack();
  }

  async function refresh() {
    const r = await api('GET', 'status');
    if (r.status !== 200) {
      $('subject').textContent = r.status === 401 ? 'Payment link not valid' : 'Cannot load this order';
      notice(errorText(r));
      show(null);
      return;
    }
    state.trade = r.json.trade;
    renderSummary(state.trade);
    const p = r.json.payment;
    if (p && p.status !== 'FAILED') {
      showPayment(p);
      return;
    }
    if (state.trade.status !== 'WAIT_BUYER_PAY' || Date.parse(state.trade.expires_at) <= Date.now()) {
      showClosed();
      return;
    }
    if (p) notice((FAILURES[(p.failure || {}).code] || 'Your last attempt did not go through') + '. Choose another way to pay.');
    await loadMethods();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('pay').addEventListener('click', payNow);
    $('card-form').addEventListener('submit', (e) => { e.preventDefault(); payNow(); });
    $('code-form').addEventListener('submit', (e) => { e.preventDefault(); payNow(); });
    $('challenge-form').addEventListener('submit', answerChallenge);
    $('card-pan').addEventListener('input', (e) => {
      const digits = e.target.value.replace(/\D/g, '').slice(0, 19);
      e.target.value = digits.replace(/(\d{4})(?=\d)/g, '$1 ');
    });
    $('card-exp').addEventListener('input', (e) => {
      const d = e.target.value.replace(/\D/g, '').slice(0, 4);
      e.target.value = d.length > 2 ? d.slice(0, 2) + '/' + d.slice(2) : d;
    });
    refresh();
  });
})();
