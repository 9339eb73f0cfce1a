-- rules/cashier_rank.lua: in which order the cashier shows payment methods,
-- which ones it hides, and which one it recommends.
--
-- Called as  rank(ctx, methods)  and returns the methods to show, in order.
-- You may reorder, drop entries and set  recommended = true  on some.
-- You may NOT invent methods: every entry returned must be one of the input
-- methods (same method_id), at most once. Anything else is refused and the
-- cashier falls back to showing the input list unchanged.
-- Hiding is what the cashier shows, not a control: a client that sends a
-- hidden method to pay is not stopped by this rule (pay does not call it).
-- To forbid a method for some payments, refuse it in risk.lua (ctx.method,
-- ctx.product), which every payment passes.
--
-- ctx (filled by paycore before the call; amounts in minor units, integers):
--   ctx.amount                  amount to pay, e.g. 1999 = 19.99
--   ctx.currency                "CNY", "USD", ...
--   ctx.product                 "INSTANT" | "GUARANTEE" | "RECHARGE"
--   ctx.platform                "WEB" | "H5" | "APP"
--   ctx.now                     current time, Unix seconds
--   ctx.merchant.id             merchant id
--   ctx.buyer.id                buyer id (absent for guests)
--   ctx.buyer.balance           buyer's available wallet balance
--   ctx.buyer.last_method_id    the method_id of the type the buyer paid with last
--                               (last 90 days; absent if none). paycore records the
--                               type, not the exact method: a last payment by a bound
--                               card reads as the most recently bound card
--                               ("QUICK_PAY:<card_id>"), by a named balance as
--                               "BALANCE", by a coupon as "COUPON" (no such method_id)
--   ctx.buyer.type_counts       {CARD = 3, WALLET = 1, ...}: successful payments per type, last 90 days
--   ctx.policy.hide_unavailable true: drop methods that cannot be used right now
--                               false/absent: keep them, at the bottom
--                               (one platform setting, cashier.hide_unavailable in the
--                               config; not per merchant)
--
-- methods: a list; each method has
--   method_id     unique id of this option, as the pay request names it:
--                 "BALANCE", "BALANCE:<account type>", "COUPON:<coupon_id>",
--                 "QUICK_PAY:<card_id>" (a bound card), or the type itself for
--                 "CARD" (a new card), "WALLET", "NETBANK", "VA", "OTC",
--                 "QR_MERCHANT", "QR_BUYER". (The examples in tests/ use short
--                 made-up ids such as "m_balance"; any string works there.)
--   type          BALANCE | COUPON | CARD | QUICK_PAY | NETBANK | VA | OTC |
--                 WALLET | QR_MERCHANT | QR_BUYER (AGREEMENT exists in the API
--                 but the cashier never offers it)
--   label         what the buyer sees
--   available     true / false
--   reason        why it is unavailable: "INSUFFICIENT_BALANCE",
--                 "LIMIT_EXCEEDED", "MIN_AMOUNT_NOT_MET", "CHANNEL_UNAVAILABLE"
--                 (a bound card whose channel is off) or "BUYER_BLOCKED". A
--                 method type no switched-on channel takes is not listed at all.
--   max_amount    the most this method can pay for this trade
--   channel_id    channel that would process it; absent for BALANCE / COUPON,
--                 and when several channels could (the payment is routed later)
--   card          bound cards only: { card_id, brand, last4 }
--   coupon        coupons only: { coupon_id, amount }
--   recommended   false on input
--
-- What this rule does:
--   1. Unavailable methods go last, or are dropped when the policy says so.
--   2. Balance goes first when it covers the whole amount.
--   3. Then the method the buyer used last time.
--   4. Then by type: coupons, then the types people finish paying with most
--      often (see TYPE_ORDER), the buyer's own favourite type first.
--   5. Exactly one method is recommended: the first available one that can
--      pay the whole amount by itself.

-- Lower number = shown earlier. Wallets come before cards on phones, where
-- the wallet app is one tap away.
local TYPE_ORDER = {
  BALANCE = 1, COUPON = 2, QUICK_PAY = 3, WALLET = 4, CARD = 5, QR_MERCHANT = 6,
  AGREEMENT = 7, NETBANK = 8, VA = 9, OTC = 10, QR_BUYER = 11,
}
local TYPE_ORDER_MOBILE = {
  BALANCE = 1, COUPON = 2, WALLET = 3, QUICK_PAY = 4, CARD = 5, QR_MERCHANT = 6,
  AGREEMENT = 7, NETBANK = 8, VA = 9, OTC = 10, QR_BUYER = 11,
}

-- The buyer's favourite type: the one with the most successful payments
-- (ties: whichever comes first in the normal order).
local function favourite_type(ctx, order)
  local counts = ctx.buyer and ctx.buyer.type_counts
  if not counts then return nil end
  local best, best_count = nil, 0
  for t, n in pairs(counts) do
    if n > best_count or (n == best_count and best and (order[t] or 99) < (order[best] or 99)) then
      best, best_count = t, n
    end
  end
  return best
end

return function(ctx, methods)
  local mobile = ctx.platform == "APP" or ctx.platform == "H5"
  local order = mobile and TYPE_ORDER_MOBILE or TYPE_ORDER
  local favourite = favourite_type(ctx, order)
  local last_used = ctx.buyer and ctx.buyer.last_method_id
  local hide_unavailable = ctx.policy and ctx.policy.hide_unavailable

  -- Each method gets one sort key, smaller first: the group, then the type's
  -- rank, then its position in the input (so ties keep the input order).
  -- The last four digits of a key are the position, so sorting the keys
  -- sorts the methods. Plain numbers sort fast and need no comparison
  -- function.
  local keys = {}
  for position, m in ipairs(methods) do
    if m.available or not hide_unavailable then
      local group
      if not m.available then
        group = 4                                   -- cannot be used: last
      elseif m.type == "BALANCE" and (m.max_amount or 0) >= ctx.amount then
        group = 1                                   -- balance pays it all
      elseif last_used and m.method_id == last_used then
        group = 2                                   -- what the buyer used last
      else
        group = 3
      end
      local rank = order[m.type] or 99
      if group == 3 and favourite and m.type == favourite and m.type ~= "COUPON" then
        rank = 2.5                                  -- just after coupons
      end
      m.recommended = false
      keys[#keys + 1] = (group * 1000 + rank * 10) * 10000 + position
    end
  end
  table.sort(keys)

  local result = keys                               -- reuse the list in place
  for i, key in ipairs(keys) do
    result[i] = methods[key % 10000]
  end

  -- Recommend the first method that can pay the whole amount on its own:
  -- balance and coupons only when they cover it, anything else always.
  for _, m in ipairs(result) do
    local partial_only = m.type == "BALANCE" or m.type == "COUPON"
    if m.available and (not partial_only or (m.max_amount or 0) >= ctx.amount) then
      m.recommended = true
      break
    end
  end
  return result
end
