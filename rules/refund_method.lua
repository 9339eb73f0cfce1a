-- rules/refund_method.lua: how a refund reaches the buyer.
--
-- Called as  refund_method(ctx)  and returns one of
--   "API"      send it to the paying channel's refund API (fastest, automatic)
--   "PAYOUT"   pay the money out to the buyer's card or bank account
--   "FILE"     put it in the channel's refund file (batch, next business day)
--   "OFFLINE"  ops handle it by hand
-- The answer must be something that can actually run: API and FILE only if
-- the channel lists them in ctx.channel.refund_methods, PAYOUT only if
-- ctx.payee_available is true and the channel pays out to that payee: it
-- lists PAYOUT, or the payee is a card (ctx.payee_type "CARD", whose token
-- the paying channel holds). paycore turns a PAYOUT that cannot run into
-- OFFLINE. OFFLINE is always possible, and is what paycore uses if this rule
-- fails.
--
-- ctx (filled by paycore before the call; amounts in minor units, integers):
--   ctx.now                        current time, Unix seconds
--   ctx.currency                   ISO 4217 code of both amounts ("CNY"; a
--                                  figure compared with an amount must be
--                                  one of this currency's, as in risk.lua)
--   ctx.refund.amount              the part of the refund that goes back through
--                                  the channel (balance and coupon parts are
--                                  returned by paycore itself; a refund with no
--                                  channel part never asks this rule)
--   ctx.refund.type                "NORMAL" (merchant asked) | "ERROR" (platform
--                                  returns a duplicate / late payment)
--   ctx.refund.partial             true when less than the payment is refunded
--   ctx.payment.amount             amount the buyer paid on this channel
--   ctx.payment.method             payment method type ("CARD", "QUICK_PAY" for a
--                                  bound card, "VA", ...)
--   ctx.payment.channel_id         channel that took the payment
--   ctx.payment.paid_at            when it was paid, Unix seconds
--   ctx.channel.refund_methods     what the channel supports, e.g. { "API" }
--   ctx.channel.refund_window_days how long after payment the channel accepts refunds
--   ctx.channel.partial_refund     true if the channel accepts partial refunds
--   ctx.channel.enabled            false while ops have switched the channel off
--                                  (also for a channel no longer configured, whose
--                                  refund_methods is then empty and window 0)
--   ctx.payee_available            true if paycore has the buyer's card or account
--                                  details to pay out to (the merchant's refund
--                                  request named a payee, or the buyer paid with
--                                  a card paycore holds)
--   ctx.payee_type                 that payee's kind: "CARD" or "ACCOUNT" ("" when
--                                  none)
--
-- What this rule does:
--   1. Within the channel's refund window, use the channel: API if it has
--      one (and takes partial refunds when this one is partial), else FILE.
--   2. Otherwise pay out to the buyer when we know where to send the money.
--   3. Otherwise ops handle it (they find the buyer's account).

local function supports(ctx, method)
  return paycore.contains(ctx.channel.refund_methods, method)
end

return function(ctx)
  -- In seconds: counted in whole days, 180 days and 23 hours was still
  -- "180 days", and the channel refused the refund as out of its window.
  local window_s = (ctx.channel.refund_window_days or 0) * 86400
  local in_window = ctx.now - ctx.payment.paid_at < window_s
  local channel_on = ctx.channel.enabled ~= false
  -- An error refund is partial only when a chargeback the cardholder won
  -- returned part of the payment: then it is held to the same rule.
  local partial_ok = not ctx.refund.partial or ctx.channel.partial_refund

  if in_window and channel_on and partial_ok then
    if supports(ctx, "API") then return "API" end
    if supports(ctx, "FILE") then return "FILE" end
  end

  -- A payout needs somewhere to go: the account the merchant named in the
  -- refund request, or the card the buyer paid with. Channels that refund
  -- only by payout (a bank transfer's VA channel) are no exception. It goes
  -- through the paying channel, so not while ops have switched that off, and
  -- only to what it pays out to: accounts when it lists PAYOUT, the cards
  -- whose tokens it holds. (A cash or net-banking channel pays nothing out:
  -- its refund to an account is paid by hand.)
  local pays_out = supports(ctx, "PAYOUT") or ctx.payee_type == "CARD"
  if ctx.payee_available and channel_on and pays_out then
    return "PAYOUT"
  end

  return "OFFLINE"
end
