-- rules/risk.lua: should this payment go ahead?
--
-- Called as  risk(ctx)  and returns
--   { decision = "ACCEPT" | "REVIEW" | "CHALLENGE" | "REJECT",
--     score    = 0..100 (integer; higher = riskier),
--     reasons  = { "REASON_CODE", ... } }       -- recorded with the payment
--
--   ACCEPT     go ahead
--   CHALLENGE  the buyer must pass a challenge (e.g. 3-D Secure) first
--   REVIEW     hold the payment for ops to release or reject
--   REJECT     refuse the payment
-- If this rule fails (error, too slow, bad answer) paycore decides REVIEW,
-- never ACCEPT.
--
-- ctx (filled by paycore before the call; amounts in minor units, integers):
--   ctx.kind                      "PAYMENT" | "REFUND" | "PAYOUT"
--   ctx.amount, ctx.currency      this payment
--   ctx.method                    payment method type ("CARD", "WALLET", ...)
--   ctx.product                   "INSTANT" | "GUARANTEE" | "RECHARGE"
--   ctx.now                       current time, Unix seconds
--   ctx.challenge_passed          true when the buyer already passed a challenge
--                                 for this payment (the second accept)
--   ctx.buyer.id                  buyer id
--   ctx.buyer.blocked             true if ops blocked this buyer
--   ctx.buyer.chargebacks_90d     chargebacks against this buyer in 90 days
--   ctx.buyer.account_age_days    days since the buyer registered
--   ctx.merchant.id               merchant id
--   ctx.merchant.chargeback_rate_bp  merchant's chargeback rate, basis points
--                                 (100 = 1 %)
--   ctx.velocity.buyer_attempts_1h   payment attempts by this buyer, last hour
--   ctx.velocity.buyer_amount_24h    amount this buyer paid in 24 h (before this one)
--   ctx.velocity.card_attempts_1h    attempts with this card, last hour
--   ctx.velocity.ip_attempts_1h      attempts from this IP, last hour
--   ctx.velocity.device_attempts_1h  attempts from this device, last hour
--   ctx.velocity.complete         false when the counters could not be read
--                                 (Redis down): the counts above are short
--   ("last hour": this clock hour and the one before, so never less than the
--   attempts of the last 60 minutes)
--   ctx.lists.ip_blocked          true if the client IP is on a block list
--   ctx.lists.device_blocked      true if the device is on a block list
--   ctx.lists.card_blocked        true if the card is on a block list
--   ctx.client.ip, ctx.client.device_id, ctx.client.platform
-- Any field may be absent (for example no card for a wallet payment); absent
-- counts as "nothing known".

-- Thresholds. Amounts are minor units: 500000 = 5,000.00.
local LARGE_AMOUNT = 500000
local VERY_LARGE_AMOUNT = 2000000
local DAILY_AMOUNT_LIMIT = 5000000

-- Score at or above which each decision applies.
local REJECT_AT = 80
local REVIEW_AT = 50
local CHALLENGE_AT = 30

-- Methods where the buyer can be challenged (3-D Secure style).
local CAN_CHALLENGE = { CARD = true, QUICK_PAY = true }

local function n(x) return x or 0 end

return function(ctx)
  local buyer = ctx.buyer or {}
  local merchant = ctx.merchant or {}
  local velocity = ctx.velocity or {}
  local lists = ctx.lists or {}
  local reasons = {}
  local score = 0

  local function add(points, reason)
    score = score + points
    reasons[#reasons + 1] = reason
  end

  -- 1. Hard stops: anything on a block list is rejected outright.
  if buyer.blocked then add(100, "BUYER_BLOCKED") end
  if lists.card_blocked then add(100, "CARD_BLOCKED") end
  if lists.ip_blocked then add(100, "IP_BLOCKED") end
  if lists.device_blocked then add(100, "DEVICE_BLOCKED") end
  if n(buyer.chargebacks_90d) >= 3 then add(100, "BUYER_CHARGEBACKS") end
  if score >= 100 then
    return { decision = "REJECT", score = 100, reasons = reasons }
  end

  -- 2. Amount.
  if ctx.amount >= VERY_LARGE_AMOUNT then
    add(50, "VERY_LARGE_AMOUNT")
  elseif ctx.amount >= LARGE_AMOUNT then
    add(30, "LARGE_AMOUNT")
  end
  if n(velocity.buyer_amount_24h) + ctx.amount > DAILY_AMOUNT_LIMIT then
    add(25, "DAILY_AMOUNT_HIGH")
  end

  -- 3. Velocity: many attempts in a short time is how card testing looks.
  -- Counts that could not be read are not "no attempts": challenge a card,
  -- hold anything else for review.
  if velocity.complete == false then add(30, "VELOCITY_UNKNOWN") end
  if n(velocity.buyer_attempts_1h) > 5 then add(20, "BUYER_VELOCITY") end
  if n(velocity.card_attempts_1h) > 3 then add(25, "CARD_VELOCITY") end
  if n(velocity.ip_attempts_1h) > 20 then add(20, "IP_VELOCITY") end
  if n(velocity.device_attempts_1h) > 10 then add(15, "DEVICE_VELOCITY") end

  -- 4. History.
  if n(buyer.chargebacks_90d) > 0 then add(25 * buyer.chargebacks_90d, "BUYER_HAS_CHARGEBACKS") end
  if n(merchant.chargeback_rate_bp) >= 100 then add(15, "MERCHANT_CHARGEBACK_RATE") end
  if buyer.account_age_days ~= nil and buyer.account_age_days < 1 then
    add(10, "NEW_ACCOUNT")
  end

  if score > 100 then score = 100 end

  -- 5. Decide. A buyer who already passed a challenge is not challenged again.
  local decision
  if score >= REJECT_AT then
    decision = "REJECT"
  elseif score >= REVIEW_AT then
    decision = "REVIEW"
  elseif score >= CHALLENGE_AT then
    if ctx.challenge_passed then
      decision = "ACCEPT"
      reasons[#reasons + 1] = "CHALLENGE_PASSED"
    elseif CAN_CHALLENGE[ctx.method] then
      decision = "CHALLENGE"
    else
      decision = "REVIEW"
    end
  else
    decision = "ACCEPT"
  end
  return { decision = decision, score = score, reasons = reasons }
end
