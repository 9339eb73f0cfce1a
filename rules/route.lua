-- rules/route.lua: which channel processes this payment, and which ones to
-- fall back to if it fails with a retryable error.
--
-- Called as  route(ctx, candidates)  and returns the channel ids to try, best
-- first:  { "sim_card", "sim_card2" }  (returning candidate tables works too).
-- Only ids from the candidates are accepted, each at most once. Returning an
-- empty list means "no channel may take this payment" and the payment fails.
-- If this rule fails, paycore uses healthy channels first, then the highest
-- success rate.
--
-- ctx (filled by paycore before the call; amounts in minor units, integers):
--   ctx.amount, ctx.currency    the part of the payment this channel charges
--                               (after the balance and coupon parts)
--   ctx.method                  payment method type ("CARD" for a card typed in,
--                               "QUICK_PAY" for a bound card, "WALLET", ...)
--   ctx.merchant.id             merchant id
--   ctx.buyer.id                buyer id
--   ctx.card.brand              "VISA", "MASTERCARD", ... (card methods only)
--   ctx.card.bin                first 6 digits (card methods only)
--   ctx.attempt                 always 1: the rule is asked once per payment, and
--                               on a retryable decline paycore moves on to the next
--                               channel of the list this rule returned
--   ctx.now                     current time, Unix seconds
--
-- candidates: channels that are enabled and accept this method, currency and
-- amount. Each has
--   channel_id        e.g. "sim_card"
--   healthy           false when its recent failure rate passed its alert threshold
--   success_rate_bp   recent technical success rate in basis points (9650 =
--                     96.5 %): timeouts, channel errors and retryable declines
--                     count against it, a final decline (card declined) does not;
--                     10000 with no recent calls
--   latency_ms        recent mean latency
--   fee               what this payment would cost on this channel (minor units)
--   weight            ops' preference from channels/*.json (higher = preferred)
--
-- What this rule does:
--   1. Drop unhealthy channels (unless every channel is unhealthy: then try
--      them anyway rather than fail the buyer).
--   2. Channels whose success rates are less than 2 % below the best one
--      count as equally good; among those the cheaper one wins, then the
--      higher weight, then the faster one. Further down, each 2 % is a band
--      of its own, the better band first.

-- Success rates are compared in bands of this many basis points below the
-- best candidate's, so that a 0.1 % difference does not outweigh a real fee
-- difference. (Bands counted from 0 % would split 9990 from 10000, the rate
-- an idle fallback channel shows: one failure of the primary then sent
-- every payment to the dearer fallback.)
local SUCCESS_BAND_BP = 200

local function rate(c)
  return c.success_rate_bp or 0
end

return function(ctx, candidates)
  local chosen = {}
  for _, c in ipairs(candidates) do
    if c.healthy ~= false then chosen[#chosen + 1] = c end
  end
  if #chosen == 0 then
    for _, c in ipairs(candidates) do chosen[#chosen + 1] = c end
  end

  local best = 0
  for _, c in ipairs(chosen) do
    if rate(c) > best then best = rate(c) end
  end
  local function band(c)
    return math.floor((best - rate(c)) / SUCCESS_BAND_BP)
  end

  local function better(a, b)
    if band(a) ~= band(b) then return band(a) < band(b) end
    if (a.fee or 0) ~= (b.fee or 0) then return (a.fee or 0) < (b.fee or 0) end
    if (a.weight or 0) ~= (b.weight or 0) then return (a.weight or 0) > (b.weight or 0) end
    if (a.latency_ms or 0) ~= (b.latency_ms or 0) then
      return (a.latency_ms or 0) < (b.latency_ms or 0)
    end
    return a.channel_id < b.channel_id      -- stable, predictable order
  end

  table.sort(chosen, better)

  local ids = {}
  for i, c in ipairs(chosen) do ids[i] = c.channel_id end
  return ids
end
