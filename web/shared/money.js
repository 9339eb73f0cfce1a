// Amounts in minor units as text, with the digits ISO 4217 gives each
// currency's minor unit (0 for JPY, 3 for KWD, else mostly 2), in integer
// arithmetic only. Shared by the hosted cashier and the ops console; the
// same table as pc_ledger_currency_digits (src/ledger/ledger.c). The
// browser's Intl tables are not used: they follow CLDR's display digits,
// which differ from ISO's minor units (IDR, HUF, PKR, COP, ...).
(function () {
  'use strict';
  const DIGITS = {};
  for (const c of 'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF'.split(' ')) DIGITS[c] = 0;
  for (const c of 'BHD IQD JOD KWD LYD OMR TND'.split(' ')) DIGITS[c] = 3;
  for (const c of 'CLF UYW'.split(' ')) DIGITS[c] = 4;

  // "1234.500" for 1234500 KWD minor units; no sign (the caller places it).
  window.pcMinorText = function (amount, currency) {
    const d = Object.prototype.hasOwnProperty.call(DIGITS, currency) ? DIGITS[currency] : 2;
    const a = String(Math.abs(amount)).padStart(d + 1, '0');
    return d ? a.slice(0, -d) + '.' + a.slice(-d) : a;
  };
})();
