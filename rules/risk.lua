-- rules/risk.lua: should this payment go ahead?
--
-- Called as  risk(ctx)  and returns
--   { decision = "ACCEPT" | "REVIEW" | "CHALLENGE" | "REJECT",
--     score    = 0..1000 (integer; higher = riskier; paycore's fallback when
--                this rule fails is 1000),
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
--   ctx.kind                      "PAYMENT" | "REFUND" | "PAYOUT" (which fields
--                                 each kind gets: see the end of this list)
--   ctx.amount, ctx.currency      the whole amount: the trade's for a payment
--                                 (balance and coupon parts included), the
--                                 refund's, the payout's
--   ctx.method                    payment method type: "CARD" (a card typed in),
--                                 "QUICK_PAY" (a bound card), "BALANCE", "WALLET",
--                                 "VA", ...; for a refund the paying method; for
--                                 a payout "PAYOUT"
--   ctx.product                   "INSTANT" | "GUARANTEE" | "RECHARGE"
--   ctx.now                       current time, Unix seconds
--   ctx.challenge_passed          always false today: a payment whose buyer passes
--                                 the challenge goes on without asking this rule
--                                 again (its limits are checked again instead)
--   ctx.buyer.id                  buyer id
--   ctx.buyer.blocked             true if ops blocked this buyer
--   ctx.buyer.chargebacks_90d     chargebacks against this buyer in 90 days
--   ctx.buyer.account_age_days    whole days since the buyer registered (0 on
--                                 the first day)
--   ctx.merchant.id               merchant id
--   ctx.merchant.chargeback_rate_bp  merchant's chargeback rate, basis points
--                                 (100 = 1 %)
--   ctx.velocity.buyer_attempts_1h   payment attempts by this buyer, last hour,
--                                 this one included
--   ctx.velocity.buyer_amount_24h    amount of this buyer's payments of the last
--                                 24 h that succeeded or may still succeed
--                                 (processing, unknown, held for review), in
--                                 this currency, this one not included
--   ctx.velocity.card_attempts_1h    attempts with this card, last hour
--   ctx.velocity.ip_attempts_1h      attempts from this IP, last hour (an IPv6
--                                 address: from any address of its /64)
--   ctx.velocity.device_attempts_1h  attempts from this device, last hour
--                                 (0, not absent, when there is no card, IP or
--                                 device to count)
--   ctx.velocity.complete         false when the counters could not be read
--                                 (Redis down): the counts above are short
--   ("last hour": this clock hour and the one before, so never less than the
--   attempts of the last 60 minutes)
--   ctx.lists.ip_blocked          true if the client IP is on a block list
--   ctx.lists.device_blocked      true if the device is on a block list
--   ctx.lists.card_blocked        true if the card's BIN (first 6 digits) is on
--                                 the block list (there is no list of single cards)
--   ctx.client.ip, ctx.client.device_id, ctx.client.platform
--   ctx.limits.buyer_daily        the buyer's hard daily limit in this currency
--                                 (config limits.buyer_daily / by_currency): a
--                                 payment past it is refused before this rule
-- Any field may be absent (for example no card for a wallet payment); absent
-- counts as "nothing known". Only a PAYMENT gets all of the above. A REFUND
-- gets kind, amount, currency, method, product, now, buyer.id (absent for a
-- guest) and merchant.id; a PAYOUT gets kind, amount, currency, method, now,
-- challenge_passed, merchant.id and merchant.chargeback_rate_bp. Block lists
-- and velocity therefore never fire for refunds and payouts. A refund held
-- (anything but ACCEPT) waits SUSPENDED for ops; a payout held waits for
-- review (payouts cannot be challenged).

-- Amount thresholds, in minor units of the payment's currency: 500000 is
-- CNY 5,000.00. A minor unit is worth very different amounts in different
-- currencies (KRW and JPY have no decimals, KWD has three; USD 5,000.00 is
-- about CNY 36,000, IDR 5,000.00 about CNY 2), so a currency listed here has
-- figures of its own, about the same value; any other uses DEFAULT's (CNY).
-- Product staff: add a currency with the two figures, and an example in
-- tests/risk.json.
local THRESHOLDS = {
  DEFAULT = { large = 500000,      very_large = 2000000 },
  USD     = { large = 70000,       very_large = 280000 },
  EUR     = { large = 65000,       very_large = 260000 },
  GBP     = { large = 55000,       very_large = 220000 },
  HKD     = { large = 540000,      very_large = 2160000 },
  KWD     = { large = 215000,      very_large = 860000 },
  INR     = { large = 5800000,     very_large = 23200000 },
  JPY     = { large = 100000,      very_large = 400000 },
  KRW     = { large = 1000000,     very_large = 4000000 },
  IDR     = { large = 1100000000,  very_large = 4400000000 },
  VND     = { large = 17000000,    very_large = 68000000 },
}

-- The day's spending is noted past this share of the buyer's hard daily
-- limit (ctx.limits.buyer_daily, as configured per currency), in basis
-- points: a payment that would pass the limit itself is refused before
-- this rule is asked, so a figure at the limit would never fire; a buyer
-- spending most of the day's allowance is looked at before it is used up.
local DAILY_SHARE_BP = 6000

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

  -- 2. Amount, by the currency's own figures.
  local t = THRESHOLDS[ctx.currency] or THRESHOLDS.DEFAULT
  if ctx.amount >= t.very_large then
    add(50, "VERY_LARGE_AMOUNT")
  elseif ctx.amount >= t.large then
    add(30, "LARGE_AMOUNT")
  end
  -- The day's spending on top of earlier payments (one payment alone is
  -- judged by its amount, just above).
  local limits = ctx.limits or {}
  if limits.buyer_daily and n(velocity.buyer_amount_24h) > 0 and
     n(velocity.buyer_amount_24h) + ctx.amount >
       paycore.percent_of(limits.buyer_daily, DAILY_SHARE_BP) then
    add(25, "DAILY_AMOUNT_HIGH")
  end

  -- 3. Velocity: many attempts in a short time is how card testing looks.
  -- Counts that could not be read are not "no attempts": challenge a card,
  -- hold anything else for review. A count past three times its threshold
  -- (a burst: one card tried from rotating addresses, or many cards from
  -- one address) counts twice, so that it alone is challenged or held.
  if velocity.complete == false then add(30, "VELOCITY_UNKNOWN") end
  local function burst(count, over, points, reason)
    if n(count) > 3 * over then
      add(2 * points, reason .. "_BURST")
    elseif n(count) > over then
      add(points, reason)
    end
  end
  burst(velocity.buyer_attempts_1h, 5, 20, "BUYER_VELOCITY")
  burst(velocity.card_attempts_1h, 3, 25, "CARD_VELOCITY")
  burst(velocity.ip_attempts_1h, 20, 20, "IP_VELOCITY")
  burst(velocity.device_attempts_1h, 10, 15, "DEVICE_VELOCITY")

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
