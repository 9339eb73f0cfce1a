// The ops console. It holds no secret of its own: the admin token is typed
// once, kept in sessionStorage (this tab only) and sent as a bearer token to
// the /admin API on this same origin, whose filter checks every call. A view
// whose API this paycore does not have (the router answers 404 "no such
// path") is shown as not available instead of failing.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'pc_admin_token';
  // Who acts, sent as X-Operator: kept with refund, payout, chargeback and
  // needs-ops actions (paycore records "ops" without it).
  const OPERATOR_KEY = 'pc_operator';
  let current = null;

  // ---------- helpers ----------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // Minor units to text (web/shared/money.js: the currency's ISO 4217 digits).
  function money(amount, currency) {
    if (typeof amount !== 'number') return '';
    return (amount < 0 ? '-' : '') + window.pcMinorText(amount, currency) + (currency ? ' ' + currency : '');
  }

  function when(s) {
    if (!s) return '';
    const d = new Date(s);
    return isNaN(d) ? String(s) : d.toLocaleString();
  }

  function pill(text, kind) {
    return el('span', { class: 'pill' + (kind ? ' ' + kind : ''), text });
  }

  function table(columns, rows, rowAttrs) {
    if (!rows.length) return el('div', { class: 'empty', text: 'Nothing here right now.' });
    const head = el('tr', {}, ...columns.map((c) => el('th', { text: c.title })));
    const body = rows.map((r) => el('tr', rowAttrs ? rowAttrs(r) : {},
      ...columns.map((c) => {
        const v = c.render(r);
        const td = el('td', c.num ? { class: 'num' } : {});
        if (v instanceof Node) td.append(v); else td.textContent = v === undefined || v === null ? '' : String(v);
        return td;
      })));
    return el('table', {}, el('thead', {}, head), el('tbody', {}, ...body));
  }

  function flash(text, bad) {
    const f = $('flash');
    f.hidden = !text;
    f.textContent = text || '';
    f.classList.toggle('bad', !!bad);
  }

  function errorOf(r) {
    const e = r.json && r.json.error;
    return e ? e.code + ': ' + e.message : 'HTTP ' + r.status;
  }

  function routeMissing(r) {
    return r.status === 404 && r.json && r.json.error && r.json.error.message === 'no such path';
  }

  async function api(method, path, body) {
    const opts = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + sessionStorage.getItem(TOKEN_KEY) } };
    const operator = sessionStorage.getItem(OPERATOR_KEY);
    if (operator) opts.headers['X-Operator'] = operator;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      return { status: 0, json: null, text: '' };
    }
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (res.status === 401) signOut('The token was refused. Sign in again.');
    return { status: res.status, json, text };
  }

  // Runs an action, reports it, and redraws the current view.
  async function act(label, method, path, body) {
    const r = await api(method, path, body);
    if (r.status >= 200 && r.status < 300) flash(label + ': done.');
    else flash(label + ' failed — ' + errorOf(r), true);
    await render(current, true);
    return r;
  }

  // Actions on money, channels and cases say why: the API keeps the answer
  // with the record (who did it and why). Cancelling the question cancels
  // the action.
  async function actWhy(label, method, path, field, body) {
    const why = window.prompt(label + ': why? (kept with the record)');
    if (why === null) return null;
    if (!why.trim()) {
      flash(label + ' not done: say why.', true);
      return null;
    }
    return act(label, method, path, Object.assign({}, body || {}, { [field]: why.trim() }));
  }

  function notAvailable(what) {
    return el('div', { class: 'na-box', 'data-testid': 'not-available' },
      el('strong', { text: 'Not available' }), el('br'),
      'This paycore does not serve ' + what + ' yet.');
  }

  function markNav(view, available) {
    const a = document.querySelector('.nav a[data-view="' + view + '"]');
    if (a) a.classList.toggle('na', !available);
  }

  function input(attrs) {
    return el('input', attrs);
  }

  function select(id, options) {
    return el('select', { id }, ...options.map((o) => el('option', { value: o, text: o })));
  }

  // ---------- views ----------

  const views = {};

  views.rules = {
    title: 'Rules',
    probe: '/admin/rules',
    async draw(box) {
      const r = await api('GET', '/admin/rules');
      if (routeMissing(r)) return notAvailable('GET /admin/rules');
      const rows = (r.json && r.json.rules) || [];
      box.append(el('div', { class: 'inline' },
        el('button', { id: 'reload-rules', onclick: () => act('Reload rules and channels', 'POST', '/admin/reload') }, 'Reload rules and channels'),
        el('span', { class: 'muted', text: 'Loads the files again; a version that fails to compile or fails its examples is refused and the old one keeps serving.' })));
      box.append(table([
        { title: 'Rule', render: (x) => el('code', { text: x.name + '.lua' }) },
        { title: 'Status', render: (x) => pill(x.status, x.status === 'ok' ? 'ok' : 'bad') },
        { title: 'Version', render: (x) => x.version ? el('code', { title: x.version, text: x.version.slice(0, 12) }) : '—' },
        { title: 'Loaded', render: (x) => when(x.loaded_at) },
        { title: 'Examples', num: true, render: (x) => x.examples },
        { title: 'Last error', render: (x) => x.last_error
          ? el('span', { class: 'err', text: x.last_error.file + ':' + x.last_error.line + ' ' + x.last_error.message + (x.refused_version ? ' (refused ' + x.refused_version.slice(0, 12) + ')' : '') })
          : '—' },
      ], rows, (x) => ({ 'data-rule': x.name })));
    },
  };

  views.channels = {
    title: 'Channels',
    probe: '/admin/channels',
    async draw(box) {
      const r = await api('GET', '/admin/channels');
      if (routeMissing(r)) return notAvailable('GET /admin/channels');
      const rows = (r.json && r.json.channels) || [];
      box.append(table([
        { title: 'Channel', render: (x) => el('span', {}, el('code', { text: x.channel_id }), el('br'), el('span', { class: 'muted', text: (x.config && x.config.name) || '' })) },
        { title: 'Methods', render: (x) => ((x.config && x.config.methods) || []).join(', ') },
        { title: 'Switch', render: (x) => el('span', {}, pill(x.enabled ? 'enabled' : 'disabled', x.enabled ? 'ok' : 'bad'),
          x.override === null || x.override === undefined ? '' : el('span', { class: 'muted', text: ' (ops)' })) },
        { title: 'Health', render: (x) => x.health ? pill(x.health.healthy ? 'healthy' : 'unhealthy', x.health.healthy ? 'ok' : 'bad') : '—' },
        { title: 'Success rate', num: true, render: (x) => x.health ? (x.health.success_rate_bp / 100).toFixed(2) + ' %' : '—' },
        { title: 'Attempts / failures', num: true, render: (x) => x.health ? x.health.attempts + ' / ' + x.health.failures : '—' },
        { title: 'Latency', num: true, render: (x) => x.health ? x.health.latency_ms + ' ms' : '—' },
        { title: '', render: (x) => x.enabled
          ? el('button', { class: 'danger', 'data-action': 'disable', onclick: () => actWhy('Disable ' + x.channel_id, 'POST', '/admin/channels/' + encodeURIComponent(x.channel_id) + '/disable', 'reason') }, 'Disable')
          : el('button', { 'data-action': 'enable', onclick: () => actWhy('Enable ' + x.channel_id, 'POST', '/admin/channels/' + encodeURIComponent(x.channel_id) + '/enable', 'reason') }, 'Enable') },
      ], rows, (x) => ({ 'data-channel-id': x.channel_id })));
    },
  };

  views.alerts = {
    title: 'Alerts',
    probe: '/admin/alerts',
    async draw(box) {
      const r = await api('GET', '/admin/alerts');
      if (routeMissing(r)) return notAvailable('GET /admin/alerts');
      const rows = (r.json && r.json.alerts) || [];
      box.append(table([
        { title: 'Status', render: (x) => pill(x.status, x.status === 'ACTIVE' ? 'bad' : 'ok') },
        { title: 'Kind', render: (x) => el('code', { text: x.kind }) },
        { title: 'Subject', render: (x) => x.subject },
        { title: 'Message', render: (x) => x.message },
        { title: 'Raised', render: (x) => when(x.raised_at) },
        { title: 'Resolved', render: (x) => when(x.resolved_at) },
      ], rows));
    },
  };

  views.reviews = {
    title: 'Payments in review',
    probe: '/admin/reviews',
    async draw(box) {
      const r = await api('GET', '/admin/reviews');
      if (routeMissing(r)) return notAvailable('GET /admin/reviews');
      const rows = (r.json && r.json.reviews) || [];
      if (r.json && r.json.total > rows.length)
        box.append(el('p', { text: 'The oldest ' + rows.length + ' of ' + r.json.total + ' payments in review.' }));
      box.append(table([
        { title: 'Payment', render: (x) => el('code', { text: x.payment_no }) },
        { title: 'Trade', render: (x) => el('code', { text: x.trade_no }) },
        { title: 'Merchant / buyer', render: (x) => x.merchant_id + ' / ' + (x.buyer_id || 'guest') },
        { title: 'Amount', num: true, render: (x) => money(x.amount, x.currency) },
        { title: 'Method', render: (x) => x.method },
        { title: 'Risk', render: (x) => (x.risk_score === null ? '' : x.risk_score + ' ') + ((x.risk_reasons || []).join(', ')) },
        { title: 'Since', render: (x) => when(x.created_at) },
        { title: '', render: (x) => el('span', { class: 'actions' },
          el('button', { 'data-action': 'release', onclick: () => act('Release ' + x.payment_no, 'POST', '/admin/payments/' + encodeURIComponent(x.payment_no) + '/release') }, 'Release'),
          el('button', { class: 'danger', 'data-action': 'reject', onclick: () => act('Reject ' + x.payment_no, 'POST', '/admin/payments/' + encodeURIComponent(x.payment_no) + '/reject') }, 'Reject')) },
      ], rows, (x) => ({ 'data-payment-no': x.payment_no })));
    },
  };

  const REFUND_ACTIONS = ['suspend', 'resume', 'terminate', 'force-fail', 'confirm'];

  views.refunds = {
    title: 'Refunds needing action',
    probe: '/admin/refunds/-',
    async draw(box) {
      const list = await api('GET', '/admin/refunds?waiting=true');
      const one = await api('GET', '/admin/refunds/-');
      if (routeMissing(list) && routeMissing(one)) return notAvailable('the refund ops API (/admin/refunds)');
      const actions = (no) => el('span', { class: 'actions' }, ...REFUND_ACTIONS.map((a) =>
        el('button', { class: a === 'terminate' || a === 'force-fail' ? 'danger' : 'secondary', 'data-action': a,
          onclick: () => actWhy(a + ' ' + no, 'POST', '/admin/refunds/' + encodeURIComponent(no) + '/' + a, 'why') }, a)));
      if (list.status === 200 && list.json && Array.isArray(list.json.refunds)) {
        box.append(table([
          { title: 'Refund', render: (x) => el('code', { text: x.refund_no }) },
          { title: 'Trade', render: (x) => el('code', { text: x.trade_no || '' }) },
          { title: 'Amount', num: true, render: (x) => money(x.amount, x.currency) },
          { title: 'Type / method', render: (x) => (x.type || '') + ' / ' + (x.method || '') },
          { title: 'Status', render: (x) => pill(x.status, x.status === 'FAILED' ? 'bad' : x.status === 'SUSPENDED' ? 'warn' : '') },
          { title: '', render: (x) => actions(x.refund_no) },
        ], list.json.refunds, (x) => ({ 'data-refund-no': x.refund_no })));
      } else if (routeMissing(list)) {
        box.append(el('p', { class: 'muted', text: 'This paycore has no refund list yet: look refunds up by number.' }));
      } else {
        box.append(el('p', { class: 'err', text: 'The list of waiting refunds could not be read: ' + errorOf(list) }));
      }
      const out = el('div');
      const no = input({ id: 'refund-no', placeholder: 'refund_no', size: 28 });
      box.append(el('div', { class: 'card' }, el('h2', { text: 'Find a refund' }),
        el('form', { class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          out.textContent = '';
          const r = await api('GET', '/admin/refunds/' + encodeURIComponent(no.value.trim()));
          if (r.status !== 200) { out.append(el('p', { class: 'err', text: errorOf(r) })); return; }
          const x = r.json;
          out.append(el('dl', { class: 'kv' }, ...['refund_no', 'trade_no', 'type', 'method', 'status', 'amount', 'created_at', 'finished_at']
            .flatMap((k) => [el('dt', { text: k }), el('dd', { text: k === 'amount' ? money(x.amount, x.currency) : (x[k] === null || x[k] === undefined ? '' : String(x[k])) })])),
          actions(x.refund_no));
        } }, no, el('button', { type: 'submit' }, 'Find')), out));
      const method = select('batch-method', ['FILE', 'OFFLINE']);
      const channel = input({ id: 'batch-channel', placeholder: 'channel_id (FILE)', size: 16 });
      const res = el('div');
      box.append(el('div', { class: 'card' }, el('h2', { text: 'Batch export (FILE / OFFLINE refunds)' }),
        el('form', { class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          const why = window.prompt('Export a ' + method.value + ' batch: why? (kept with each refund)');
          if (why === null) return;
          if (!why.trim()) { flash('Batch not exported: say why.', true); return; }
          const body = { method: method.value, why: why.trim() };
          if (channel.value.trim()) body.channel_id = channel.value.trim();
          const r = await api('POST', '/admin/refund-batches', body);
          res.textContent = '';
          res.append(r.status < 300 ? el('pre', { text: r.text }) : el('p', { class: 'err', text: errorOf(r) }));
        } }, method, channel, el('button', { type: 'submit' }, 'Export batch')), res));
    },
  };

  // Payments, payouts and refunds a person must look at: in flight after
  // every status query (ask the channel, record its answer), or final while
  // the channel says otherwise (settle it, then resolve).
  views.needsops = {
    title: 'Needs ops',
    probe: '/admin/needs-ops',
    async draw(box) {
      const r = await api('GET', '/admin/needs-ops');
      if (routeMissing(r)) return notAvailable('GET /admin/needs-ops');
      if (r.status !== 200) return el('p', { class: 'err', text: errorOf(r) });
      const rows = ['payment', 'payout', 'refund'].flatMap((kind) =>
        ((r.json && r.json[kind + 's']) || []).map((x) => Object.assign({ kind, ref: x[kind + '_no'] }, x)));
      const path = (x) => '/admin/needs-ops/' + x.kind + '/' + encodeURIComponent(x.ref) + '/resolve';
      const actions = (x) => x.final
        ? el('span', { class: 'actions' },
          el('button', { 'data-action': 'resolve', onclick: () => actWhy('Resolve ' + x.ref, 'POST', path(x), 'why') }, 'Resolve'))
        : el('span', { class: 'actions' },
          el('button', { 'data-action': 'record-success', onclick: () => actWhy('Record ' + x.ref + ' as paid by its channel', 'POST', path(x), 'why', { outcome: 'SUCCESS' }) }, 'Channel says paid'),
          el('button', { class: 'danger', 'data-action': 'record-failed', onclick: () => actWhy('Record ' + x.ref + ' as failed at its channel', 'POST', path(x), 'why', { outcome: 'FAILED' }) }, 'Channel says failed'));
      box.append(el('p', { class: 'muted', text: 'In flight: every status query went unanswered; ask the channel and record what it says. Final: the channel contradicts it; settle it with the channel or the buyer, then resolve.' }));
      box.append(table([
        { title: 'Kind', render: (x) => x.kind },
        { title: 'Reference', render: (x) => el('code', { text: x.ref }) },
        { title: 'Merchant', render: (x) => x.merchant_id || '' },
        { title: 'Channel', render: (x) => x.channel_id || '' },
        { title: 'Amount', num: true, render: (x) => money(x.amount, x.currency) },
        { title: 'Status', render: (x) => pill(x.status + (x.final ? ' (contradicted)' : ' (no answer)'), x.final ? 'bad' : 'warn') },
        { title: 'Since', render: (x) => when(x.updated_at) },
        { title: '', render: actions },
      ], rows, (x) => ({ 'data-kind': x.kind, 'data-ref': x.ref })));
    },
  };

  views.chargebacks = {
    title: 'Chargebacks',
    probe: '/admin/chargebacks',
    async draw(box) {
      const r = await api('GET', '/admin/chargebacks');
      if (routeMissing(r)) return notAvailable('the chargeback ops API (/admin/chargebacks)');
      const judge = (no) => {
        const liable = select('liable-' + no, ['MERCHANT', 'PLATFORM', 'NONE']);
        return el('span', { class: 'actions' },
          el('button', { class: 'secondary', onclick: () => actWhy('Start judging ' + no, 'POST', '/admin/chargebacks/' + encodeURIComponent(no) + '/start-judge', 'why') }, 'start judging'),
          liable,
          el('button', { onclick: () => actWhy('Judge ' + no, 'POST', '/admin/chargebacks/' + encodeURIComponent(no) + '/judge', 'note', { liable: liable.value }) }, 'judge'),
          el('button', { class: 'danger', onclick: () => actWhy('Close ' + no, 'POST', '/admin/chargebacks/' + encodeURIComponent(no) + '/close', 'note') }, 'close'));
      };
      if (r.status === 200 && r.json && Array.isArray(r.json.chargebacks)) {
        box.append(table([
          { title: 'Chargeback', render: (x) => el('code', { text: x.chargeback_no }) },
          { title: 'Trade', render: (x) => el('code', { text: x.trade_no }) },
          { title: 'Amount', num: true, render: (x) => money(x.amount, x.currency) },
          { title: 'Reason / source', render: (x) => (x.reason_code || '') + ' / ' + (x.source || '') },
          { title: 'Status', render: (x) => pill(x.status, x.status === 'WAIT_JUDGE' ? 'warn' : '') },
          { title: 'Liable', render: (x) => x.liable || '—' },
          { title: 'Evidence due', render: (x) => when(x.evidence_due_at) },
          { title: '', render: (x) => x.status === 'JUDGE_FINISH' || x.status === 'CLOSE' ? '' : judge(x.chargeback_no) },
        ], r.json.chargebacks));
      } else {
        const no = input({ placeholder: 'chargeback_no', size: 26 });
        const slot = el('span');
        box.append(el('div', { class: 'card' }, el('h2', { text: 'Act on a chargeback' }),
          el('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); slot.textContent = ''; slot.append(judge(no.value.trim())); } },
            no, el('button', { type: 'submit' }, 'Select')), slot));
      }
      const f = { reference: input({ placeholder: 'case reference (e.g. email id)', size: 24 }),
        payment_no: input({ placeholder: 'payment_no', size: 24 }),
        amount: input({ placeholder: 'amount (minor units)', size: 14, inputmode: 'numeric' }),
        currency: input({ placeholder: "currency (the payment's)", size: 12 }),
        reason_code: input({ placeholder: 'reason code', size: 10 }) };
      const res = el('div');
      box.append(el('div', { class: 'card' }, el('h2', { text: 'Enter an offline chargeback' }),
        el('form', { class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          const body = { reference: f.reference.value.trim(), payment_no: f.payment_no.value.trim(),
            amount: parseInt(f.amount.value, 10), currency: f.currency.value.trim().toUpperCase() };
          if (f.reason_code.value.trim()) body.reason_code = f.reason_code.value.trim();
          const x = await api('POST', '/admin/chargebacks', body);
          res.textContent = '';
          res.append(x.status < 300 ? el('pre', { text: x.text }) : el('p', { class: 'err', text: errorOf(x) }));
          if (x.status < 300) await render(current, true);
        } }, f.reference, f.payment_no, f.amount, f.currency, f.reason_code, el('button', { type: 'submit' }, 'Enter')), res));
    },
  };

  views.recon = {
    title: 'Reconciliation differences',
    probe: '/admin/recon/diffs?status=OPEN',
    async draw(box) {
      const r = await api('GET', '/admin/recon/diffs?status=OPEN');
      if (routeMissing(r)) return notAvailable('the reconciliation API (/admin/recon)');
      const rows = (r.json && r.json.diffs) || [];
      box.append(table([
        { title: 'Id', render: (x) => el('code', { text: String(x.diff_id) }) },
        { title: 'Channel / day', render: (x) => x.channel_id + ' / ' + x.date },
        { title: 'Kind', render: (x) => pill(x.kind, 'warn') },
        { title: 'Reference', render: (x) => (x.local && x.local.ref) || (x.line && (x.line.paycore_ref || x.line.channel_ref)) || '' },
        { title: 'Ours / theirs', num: true, render: (x) => (x.local ? money(x.local.amount, x.local.currency) : 'none') + ' / ' + (x.line ? money(x.line.amount, x.line.currency) : 'none') },
        { title: 'Status', render: (x) => x.status },
        { title: '', render: (x) => el('button', { 'data-action': 'resolve', onclick: () => actWhy('Resolve ' + x.diff_id, 'POST', '/admin/recon/diffs/' + encodeURIComponent(x.diff_id) + '/resolve', 'reason') }, 'Resolve') },
      ], rows, (x) => ({ 'data-diff-id': String(x.diff_id) })));
      const ch = input({ placeholder: 'channel_id', size: 14 });
      const day = input({ type: 'date' });
      const res = el('div');
      box.append(el('div', { class: 'card' }, el('h2', { text: 'Run a reconciliation' }),
        el('form', { class: 'inline', onsubmit: async (e) => {
          e.preventDefault();
          const x = await api('POST', '/admin/recon/runs', { channel_id: ch.value.trim(), date: day.value });
          res.textContent = '';
          res.append(x.status < 300 ? el('pre', { text: x.text }) : el('p', { class: 'err', text: errorOf(x) }));
        } }, ch, day, el('button', { type: 'submit' }, 'Run')), res));
    },
  };

  views.ledger = {
    title: 'Ledger check',
    probe: '/admin/ledger/check',
    async draw(box) {
      const r = await api('GET', '/admin/ledger/check');
      if (routeMissing(r)) return notAvailable('GET /admin/ledger/check');
      if (r.status !== 200) return el('p', { class: 'err', text: errorOf(r) });
      const x = r.json;
      box.append(el('div', { class: 'card', 'data-testid': 'ledger' },
        el('h2', {}, 'Invariants ', pill(x.ok ? 'all hold' : 'BROKEN', x.ok ? 'ok' : 'bad')),
        el('dl', { class: 'kv' }, ...Object.entries(x).filter(([k]) => k !== 'ok')
          .flatMap(([k, v]) => [el('dt', { text: k.replace(/_/g, ' ') }), el('dd', { text: typeof v === 'object' ? JSON.stringify(v) : String(v) })]))));
    },
  };

  // ---------- frame ----------

  async function render(name, keepFlash) {
    const v = views[name] || views.rules;
    current = views[name] ? name : 'rules';
    for (const a of document.querySelectorAll('.nav a')) a.classList.toggle('active', a.dataset.view === current);
    $('view-title').textContent = v.title;
    if (!keepFlash) flash('');
    $('view-status').textContent = 'loading…';
    const box = el('div', { 'data-view': current });
    let extra;
    try {
      extra = await v.draw(box);
    } catch (e) {
      extra = el('p', { class: 'err', text: 'Could not show this view: ' + e.message });
    }
    if (extra) box.append(extra);
    markNav(current, !box.querySelector('[data-testid="not-available"]'));
    $('view').replaceChildren(box);
    $('view-status').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  async function probeAll() {
    await Promise.all(Object.entries(views).map(async ([name, v]) => {
      const r = await api('GET', v.probe);
      markNav(name, !routeMissing(r));
    }));
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(OPERATOR_KEY);
    $('shell').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !message;
    $('login-error').textContent = message || '';
  }

  async function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    const r = await api('GET', '/admin/rules');
    if (r.status === 401 || r.status === 0) {
      signOut(r.status === 0 ? 'Cannot reach paycore.' : 'The token was refused.');
      return;
    }
    $('login').hidden = true;
    $('shell').hidden = false;
    $('logout').hidden = false;
    probeAll();
    await render(location.hash.slice(1));
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const operator = $('operator').value.trim();
      // Printable ASCII only (the X-Operator header paycore keeps): a name
      // it cannot send is refused here, not dropped (every action was then
      // recorded as "ops" without a word).
      if (operator && !/^[\x20-\x7e]{1,64}$/.test(operator)) {
        signOut('Your name is sent with every action: use 1-64 plain ASCII characters (e.g. "Jose" for "José").');
        return;
      }
      if (operator) sessionStorage.setItem(OPERATOR_KEY, operator);
      signIn($('token').value.trim());
      $('token').value = '';
    });
    $('logout').addEventListener('click', () => signOut(''));
    $('refresh').addEventListener('click', () => render(current));
    window.addEventListener('hashchange', () => {
      if (sessionStorage.getItem(TOKEN_KEY)) render(location.hash.slice(1));
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved); else signOut('');
  });
})();
