/* Unit tests for auth/sign: the strings to sign, base64, HMAC-SHA256 and RSA2
 * against fixed vectors computed independently with the openssl command-line
 * tool, and the header validation boundaries of api.md.
 *
 * How the expected values were made (HMAC key below, files holding the exact
 * strings to sign):
 *   printf 'POST\n/v1/trades?lang=en\n1700000000\nn0nce-ABCDEFGHIJ_42\n{...}\n' > req.txt
 *   openssl dgst -sha256 -hmac "$KEY" -binary < req.txt | base64 -w0
 *   openssl dgst -sha256 -sign priv.pem < req.txt | base64 -w0
 * and the request hash with the framing written out byte by byte:
 *   { printf '\0\0\0\0\0\0\0\x04POST'; printf '\0\0\0\0\0\0\0\x0a/v1/trades';
 *     printf '\0\0\0\0\0\0\0\x0f{"amount":1999}'; } | sha256sum */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/err.h>

#include "auth/sign.h"
#include "core/error.h"

/* ---- TEST-ONLY KEYS ----------------------------------------------------------
 * Generated for this test with `openssl genpkey -algorithm RSA`; they protect
 * nothing and must never be used outside tests. */

static const char TEST_ONLY_PRIVATE_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDsKfatyOiaJJUi\n"
    "355F/tYP/+cIgJFgVlUol1NVsNzGfJLyE1A7JympcXKvARzXBjnSooN4sjqAUi0Z\n"
    "/x9jgZh/ASQ9n9vqLt7Wp8WbeDZlgwo7SYmW1589wUguO84kAUJlFNuNYbeFHkqd\n"
    "zJOGzRrCzLXr+yxvUryMqnRJX4n43kAdXMSQ96isK2VBd6senHXNbAmYDUvYYYXY\n"
    "7DKVhQkCw1/h+7POJ8ZL6/rYhVfDMfCYdSl47+9ynbFGBS5LeOj0Cyv5k31GIYKS\n"
    "oPmGR+4z5tnVOzGzCu2YwwrHEqtXbLYHpwTJNcD28dnTRu7TFbvS0n6oz51gI2yH\n"
    "olfo7mmtAgMBAAECggEACdWBgSERloGZeDdJlu6SqV3ll/QKmbFeoG8UuEfCGb3M\n"
    "PKpTN/Nch8LCnMj2E3od5EiCIv+A8iD54dA+1VzrJba9dJd4h9rlyph34Q5zbWy0\n"
    "e12HjjFyXxbyU4KIBfXLdvwUXGHKS4/EWafQKNfXmm790FLIOeZ/FXhvmTKSQzuh\n"
    "gGdNHrvzGDT8aqLBOJzoGbKV5aTcQc8w2pJBjdFKxKC8hkUtbLhgisF2bzAMoAOB\n"
    "d6PO9pbURG9tXxKgFzdWX2qDtB1hXmmT2TD++V/sKKys2Xhb1JNc8YkJIdcxSdOJ\n"
    "up+2GkMa2DT1SRVSuFoMlNgCtsY1K0fDePcXLw6FoQKBgQD+kI51bfwETYs5pLyX\n"
    "XvuIqPXuq3pG/yQ/KvMp+49wgKfBbd3UAFiXSAzd2Oy8SwxJcqOsT98qO2bS6CdP\n"
    "JDLZdyGqDDa2+weTjjB0HKpzusFzO28amPcivR/pnUMbneKNLZugQAWzE8iQqLYg\n"
    "cEBQ/lOFkvj9FryySjiYTDW7JQKBgQDtftjcOC1IPHjmgwLyaZhqsZOxRo7mlG/G\n"
    "p61px2BjI7DCGYbfiDkRRAkG/IyGE0rBZmz2+o58TXmtcjkhfXFAGmzTkwSk6twv\n"
    "G//v2VlrCGfEZPbWkZHSFzTv7RZHrdR/I6RS/xV/LWGeJtmeeybBJI1F7wJwfjiY\n"
    "9rkwctEx6QKBgQD3/hGaWrQp6PUaCd9jw7ddceRsR4dOxN4l34yWOKiLW/qRWJvD\n"
    "HTcw4ZMPSHWQFbh5kQHcKs9oUAgirOEmm0giTIlyJIXlCnZeDCYt54MyTRyKSrs4\n"
    "+Q3BPOdq6bZnoA8FpAm5OsWSqFI6gvEydshhXvI07XI89LqNIfsyewPZNQKBgQCP\n"
    "CVm08ISdQAaU1oz80QpCICdSmqtQRlA3th9kWPc9Xm6DyHoJwPKV6oMBWTONQKtC\n"
    "Zdz0txz/0m2ZP/UWrYV61S98Ecy3QthP6y4vF5maNBrDFwfvXQcVIHL6mbFUhGY6\n"
    "GI5MimM5EGz9ompo38UMiGYpm3S9qdeOkPIiMtS5mQKBgQC9ZxPEcauKQQzLRfeX\n"
    "oV3CseCSPygGmKxllmTnMvlhOnwsH5yt0sSGIH2diE5+Y1svjxEwOMWAjK6i8dgx\n"
    "T7xGsvv4m03Fe7aSHzDUKuVvfWEnKbVznby8fHYTea8j8vewBqLzadiG6toIVowS\n"
    "ZW2AQ/83BTevrnD6CyGEq7byCQ==\n"
    "-----END PRIVATE KEY-----\n";

static const char TEST_ONLY_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA7Cn2rcjomiSVIt+eRf7W\n"
    "D//nCICRYFZVKJdTVbDcxnyS8hNQOycpqXFyrwEc1wY50qKDeLI6gFItGf8fY4GY\n"
    "fwEkPZ/b6i7e1qfFm3g2ZYMKO0mJltefPcFILjvOJAFCZRTbjWG3hR5KncyThs0a\n"
    "wsy16/ssb1K8jKp0SV+J+N5AHVzEkPeorCtlQXerHpx1zWwJmA1L2GGF2OwylYUJ\n"
    "AsNf4fuzzifGS+v62IVXwzHwmHUpeO/vcp2xRgUuS3jo9Asr+ZN9RiGCkqD5hkfu\n"
    "M+bZ1TsxswrtmMMKxxKrV2y2B6cEyTXA9vHZ00bu0xW70tJ+qM+dYCNsh6JX6O5p\n"
    "rQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static const char TEST_ONLY_PUBLIC_PKCS1_PEM[] =
    "-----BEGIN RSA PUBLIC KEY-----\n"
    "MIIBCgKCAQEA7Cn2rcjomiSVIt+eRf7WD//nCICRYFZVKJdTVbDcxnyS8hNQOycp\n"
    "qXFyrwEc1wY50qKDeLI6gFItGf8fY4GYfwEkPZ/b6i7e1qfFm3g2ZYMKO0mJltef\n"
    "PcFILjvOJAFCZRTbjWG3hR5KncyThs0awsy16/ssb1K8jKp0SV+J+N5AHVzEkPeo\n"
    "rCtlQXerHpx1zWwJmA1L2GGF2OwylYUJAsNf4fuzzifGS+v62IVXwzHwmHUpeO/v\n"
    "cp2xRgUuS3jo9Asr+ZN9RiGCkqD5hkfuM+bZ1TsxswrtmMMKxxKrV2y2B6cEyTXA\n"
    "9vHZ00bu0xW70tJ+qM+dYCNsh6JX6O5prQIDAQAB\n"
    "-----END RSA PUBLIC KEY-----\n";

static const char TEST_ONLY_OTHER_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArxI6ZXZ4cmMaO1A9prUH\n"
    "mT9FPS6pvXj2Lh5sznVj/9U1D4fzZG7FGKmg7iomO1VSNNO1Tzfg1UCXhguTBwDU\n"
    "AiK0YH1Cpn/sASCg4cwNePQUbx2NdlN9lFYsVES7Nma9mMCTIBBghuvmZS3bCVqh\n"
    "FA+hu549mdukfCAvXnN3E8OzShdbdsIQq/L+0Nt9+lz3k/Jt6pH8xXUOPQcQoPWK\n"
    "SXtY4KmUWuaCxRlA0cLcVxlrB2TnoL8AAvXDgpFbp3+9yvQsrR8I320aTgOuxW5t\n"
    "gx4RGxzXE5LjNb/LtRKB/uetHhBzipdr/xz7RAA1asPmR8yUMYP3cyEIyj/kSZWC\n"
    "GQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

/* An 8224-bit public key: one step over PC_RSA_MAX_BITS (public, no secret). */
static const char TEST_ONLY_LONG_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIEJjANBgkqhkiG9w0BAQEFAAOCBBMAMIIEDgKCBAUAuimDx9U/mO+WWWVKpcHl\n"
    "FPnj8zDYsG4+Q85pIZEOyA5UghGlikO+sN6mx19KgvPtb3kPYLtfwJNkkdKAVB8n\n"
    "3TzKanE6I89zP8rmuHLxzeLywI9YfUY/nQlkz0j/swypAqZZA91qLjaASaY0u01i\n"
    "nLJoUrQHlTAMKucSKMzSU/BTNmeZWjhLqCq+SdMuDD5arMlbKF38+ty1Mmfu30Y5\n"
    "UoVo5VtIJmQVgt6+iWPyJ+8Ln7BHtcRq+/yuGy+PFPvMx6eztvvnviinxhWJzt0O\n"
    "Rj2uC245vvC7EDljRfckI3dENlqeETdYU0as3IE+J+TxlmMs0DDhA+MKMrvEbB4/\n"
    "MKfRPISToqB0pSninEkHcoEEkWlCgFuaTtzdwAjk8wYWo617qu7WWQB5p8CZebvc\n"
    "hvb6QWS3RfYs91JS5CtFGZ46k7joo50MbjnrYGFeop5KaBn2XdteXY/s2Py6HsGb\n"
    "umY3ljzOqTYJrzoHuTFmt7Kq/Q5ZumF04bgDV8CVSQ+dizSogTijl0xlujM2z0zC\n"
    "hsBvS7721dlAijdpLnA4eR7aEnhYUKrEeahqUPUS6rV7Xv9UgIM9Wa5ZQfSNROSv\n"
    "fac0G5nTBUM7xGukrQGIMRewWf22xwDsPvYEPbNSI1X5jxM7jbE9TI9wbPcxluvr\n"
    "ZKGg1TSa5AFNAnpvtdtzBla9JqV3sGPBn4nnS8TTooFhwwzyXZ6+uusZFiuDoThL\n"
    "LOgKBDvdgns6TgpbRuW88gwJ/LCSGaxpE4LIjOPaGDfGEN7nMjSXw3N3OnBJdXFS\n"
    "QCTAjye4uspuTlNdUfVDEoq0B9eujSCafSwEWoK7x/iYmlfV2emtiueZsIt4SFgT\n"
    "VUyLX1y3l8HevicrmZD/FCFhBqGBPOSyz4zFgEbW6TsXBx9JLlbDiLN39ghB0byy\n"
    "fmsP7Q4kZRJJtwbwTsiRbBG5l6kUkfXvmroFjBLm/R5ES00FUFCspFCI+wdIXax6\n"
    "beOYVsKah+CG+wQ1MFZsU8KiPoPwxe+318rdO2n94A3e4Y3VrIqV1vZ/H46BnkIa\n"
    "Xeqmtq5ZwQLaUfgHA5ubJeBRLTvYTZpEDZsVYIBv81eo6VZpagCbrUEjeppv2wXx\n"
    "0I3KjG+w+/FsiG7opSaVzvejlLbjKxfMezHV2fR8CAT6uoVRpA76dXRQuuOBrTY4\n"
    "BjtBRXonzgD5EQxpxXHhTNvUAoeHAbNzbkoMcppJAlvbtutEgJ+Bv6Igqb8M7u+h\n"
    "qphHfNiqTSR5cEBDHMOvsIE4iWHIBlyg2tGjtQGBcUFw7vVX+d9nJVE9oY5GfMoQ\n"
    "84aKjbngk30GFqadmHJen52jUM11ViNpQL9o+1pSjVcQPBOtqC3sXtcnf9Uylr6s\n"
    "0xBBPh0CAwEAAQ==\n"
    "-----END PUBLIC KEY-----\n";

static const char TEST_ONLY_SHORT_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDM/vUhbcrvAFg6FMznBf9+etOk\n"
    "R4PTWSQcMT42R5cKkbKKqFjy/sKHHX5YuI9WtZ5s6QSgSSqfJCinnDrtFIAjGim4\n"
    "ze6BvYYsZQ52ymMiud4kJrqaJYeZpcQ3cOeB0pUXjQSzw0RWvRKYxtjZwPGBJZX9\n"
    "jVxYPuSdX4neQZpC7QIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static const char TEST_ONLY_ENCRYPTED_PRIVATE_PEM[] =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
    "MIIFLTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQIHOfaEVRR3xoCAggA\n"
    "MAwGCCqGSIb3DQIJBQAwHQYJYIZIAWUDBAEqBBDEQipZBKI9iKdmI6dJtzT2BIIE\n"
    "0FHp3ZzYKAXr1JARb0TvvGU+J41LNW1dI/e5TIUHKYcazBnbYuGSPm+A6mfHtxXV\n"
    "FlfCQg2ckXVvAFs6neIxQx2FUI5zn3fNEdGXgIoHHThq0OjgJXj9ppFmLCSgWffU\n"
    "woT7ZrHbaOzYuKJmqRIBFbBevfk5HvPgxa9DfLxR363OuIxnHE3O/fKdjMos4Btv\n"
    "DmNJX7calBfCeFHqn7bSU5rkcqQkBDejafQS6cnRW7h4DsITT9dTgyrRVkITjCOy\n"
    "V/A2+vaB6vjbWyKXDjgpR3cp631aBB559NNYTkeAkMnWmpJsOYHo3wyM4K65Uzhn\n"
    "AcSf7cJ2cADrsLEmyuUC724l/u4NBoY/NM+yzx1+zNh5cOO752fiYsXnYeOnLnRo\n"
    "7q4tyRk3GeRWSsJJffhtE0llxINVTp7j6IWOpFVU8dCHB8U6OUm0VNKtHwKRFx5n\n"
    "R4K9ZmdpjIU1Hf66MWzyW5s1KZYV2fReJMDNAXuR2caOTGR8tcPdhXRkWBJ+pEEy\n"
    "fd/hXShRZaLZHSDrMgHVHFEuhLQ5LCDrr0NYtyKk6dQWBCc0mCAXC68u4LvhfTwK\n"
    "iBsJBrYXVFCpFRdcfe03iDV+/30T3J7wCQ3efXkuF93jagJOG7dj6p+BP7xAnkGZ\n"
    "5QzaXSKNm2NXvHlMBbubDo6p0jM1r240eUd7FYOBdj2vdhIcXPYtl0VS90NggQ8l\n"
    "i3Ahffv2HRrEZYGMkb9NBgQeJUFNwhFaRAtqs9WIbhoWCEnAzFaQooVSOzP48ik6\n"
    "OJgblNZob+F23uyVJhWgI3N9ZvtQEhg8QRC6kh1GCL6okZqrYaKYpyuIftnSIvxD\n"
    "kwdEkSWJblkCc9klyMHkZqkiaM562UIcwBPkPhZK+Y/8eFevbblgqd5MKVD1IjGU\n"
    "uKZ06I94WZOJOiZ+onT+pbnwyZMvzICazqvUU/btHu132skYnD2FinPzUgw6CW25\n"
    "laH0SivS5xzYv3kRCv/gsWmrvmJDwu334OZfRObrYvkD7nQmraOgjf5ltiNZfFv8\n"
    "klMERdsTl6X1EotLKO8XfDQOqm0/EMz0Oq8Pa6j1QZFERxOOwGg4v3pTIBgoDFGQ\n"
    "z/o5m/z0c2QRzJc26A1a0EDiMH2RlFeGn9ZSlClUrv2N+NY0zxSaK8WkfLqzB/AJ\n"
    "/DNPi65edFG/hjvhF5xLlC+ObrJ1zNkRidJ+sIMFJlWQmUlO042Cq+BrTBb2SpHi\n"
    "Z44aQ7gPbdsVqeK2rgGnXACPEbSC7jjruZn/EU9vFkQjjmaFcdHGwS33DX4toZuJ\n"
    "zoyFSJu694peGkn+lhtfqkYElrz3p28sbYVMr4j8rWpiwAimE1hX9WkewRLM/NvN\n"
    "i/bbpoUM5CZSYkFwyoW+qEVDZnJ2eDu8rSupAYN+WSSQtAZDFAqe41WxTOOxB4d+\n"
    "FjMeYjyHsK0GaU6D9zPXJXsIIhkvryoqaCEcXdKd4sxRtG7EqoSZrIZbAwyXOw2b\n"
    "g0MQFknHf0LMXhc1l1mLDTXJ34yb9uzvxlNTErBfHye1BpDQCMGR1GsJ6IEE6s73\n"
    "ow+/g2yqjA8z8F5LVDK0SvZ5wY+tvRHh2T6z8z582fMeRlCPnJz472kv+CFgKekp\n"
    "5gAMaOTJRN6z1H2GR0Hd37tnjMTn/UK+KF5q0JfP4N4w\n"
    "-----END ENCRYPTED PRIVATE KEY-----\n";

/* ---- Fixed vectors -------------------------------------------------------------- */

static const char HMAC_KEY[] = "test-secret-0123456789abcdefghijklmnopqrstuv";

static const char TS[] = "1700000000";
static const char NONCE[] = "n0nce-ABCDEFGHIJ_42";
static const char REQ_BODY[] = "{\"out_trade_no\":\"A1001\",\"amount\":1999}";
static const char REQ_PATH[] = "/v1/trades?lang=en";
static const char REQ_STRING[] = "POST\n/v1/trades?lang=en\n1700000000\nn0nce-ABCDEFGHIJ_42\n"
                                 "{\"out_trade_no\":\"A1001\",\"amount\":1999}\n";
static const char GET_PATH[] = "/v1/trades/T123?x=1";
static const char GET_STRING[] = "GET\n/v1/trades/T123?x=1\n1700000000\nn0nce-ABCDEFGHIJ_42\n\n";
static const char NOTIFY_BODY[] = "{\"event_id\":\"e1\",\"type\":\"trade.paid\"}";
static const char NOTIFY_STRING[] = "1700000000\nn0nce-ABCDEFGHIJ_42\n"
                                    "{\"event_id\":\"e1\",\"type\":\"trade.paid\"}\n";

static const char REQ_HMAC[] = "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r0=";
static const char GET_HMAC[] = "pqBVrrarWScl2e1CB9AjolEAyBiO+zvJLh0jiMKrWhs=";
static const char NOTIFY_HMAC[] = "HtybxbZr+5/ofMjkUWB73cJI4V6mrl/GVD+Ddu6aLmc=";

static const char REQ_RSA[] =
    "XyYjMG9uecpwCv5ayx7ke3J9g8yLfZhkknP7lSR+j9XNKs+v+P4f2R483h2CFHEDFeVsdICL86oPn9D+qtB4o9HEncrIT"
    "zZae2/91LQtOQfY9aCN9ExYcNAciNodPiRP5kS4nVtAKpE88DKnVGp2c7q66LIUWgR5GLt0JLf4Lb9biwThkwPWoaSbyr"
    "UtHENZyHAHpH/pt+bSl8/ElZHltN6uZ7P8s2+ZTwZheQ2APgyS2IVjMeZhJai/OYqRHQwtujz4Ty5aSD/bc/aq3WdUYmT"
    "H145GRW5VNo3S9/4Mmf4u5dNy2Gia1s6mTSPutvqATJVzC1VkVUXkcKNv1QTZsA==";
static const char GET_RSA[] =
    "MaBLJ7KLgS/7BdKm8zC5ljg/aQ1n/3Xf4zsVyTQtsox5UyjRnuOujf4Z5O5U4DAeZexOgYVdV/H7sdKpsIYU4d06lWpPH"
    "T3I8CxER6BKOvt7vgXrTYeUN+ePbLFvQKc0cTajkaTr7JUPnhRiHdqEL8Wmey617LTlgdOypSDM0xwCF7Bp0r8z+8rAkV"
    "TYdudsd4Cj6OVWu0XCi6UHxzdTRuBwb8NgTR8UP7LufRQ6Jw+f3aU+GKUO47Hzmt6j/P8doCiVPIFfRqyCWVWWbIFLmg0"
    "ob78fqMQzb7pWoi0oFMjqOAPK+TQkszmZCZmH/iUca3t/8Nxv1ASyUxMgcAY/xQ==";
static const char NOTIFY_RSA[] =
    "YalAugdXiC5lnebofJJIqiO6koOmPasYcCV9Ptgd0y2wYRgCygES6FGuGbChgg5VWBjB4HzlVCz0EAcEdpAug/cUl3tQy"
    "1e3bAJyiZS0qZo+LRMV9titSR7ovkmz9zg4rp5urs2cCFNzF+90z+ywgmxowXfrxkjsEabreDOKapHvLbBZnJXOrP82yQ"
    "6O21V177ihJOnPNPMgIQa17KuYhYwX6wHiouP33HuGatz8xGgRn1ZJus4sn9Ib93yiU44bF1Er66eRbm9Th7WDVajn/KUV"
    "Y38TB/GXoRO6NjCdf4kKjjlhtPaBqAnWLS5ld3HXAkJBFrqFrEZh9y43OGMupw==";

/* ---- Helpers ---------------------------------------------------------------------- */

static char *request_string(const char *method, const char *path, const char *ts, const char *body,
                            size_t *len)
{
    char *s = pc_sign_request_string(method, path, ts, NONCE, body, strlen(body), len);
    assert_non_null(s);
    return s;
}

static int hmac_verify_str(const char *key, const char *msg, const char *sig)
{
    return pc_hmac_sha256_verify(key, strlen(key), msg, strlen(msg), sig, strlen(sig));
}

static int rsa_verify_str(const pc_rsa_key_t *key, const char *msg, const char *sig)
{
    return pc_rsa_sha256_verify(key, msg, strlen(msg), sig, strlen(sig));
}

/* Returns a copy of the base64 signature sig with bit `bit` of the decoded
 * bytes flipped, re-encoded so that only the signature value changes. */
static char *flip_signature_bit(const char *sig, size_t bit)
{
    uint8_t raw[512];
    size_t len = 0;
    assert_int_equal(pc_base64_decode(sig, strlen(sig), raw, sizeof raw, &len), 0);
    assert_true(bit / 8 < len);
    raw[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    char *out = pc_base64_encode(raw, len);
    assert_non_null(out);
    return out;
}

static pc_rsa_key_t *private_key;
static pc_rsa_key_t *public_key;

static int keys_setup(void **state)
{
    private_key = pc_rsa_key_new_private_pem(TEST_ONLY_PRIVATE_PEM, strlen(TEST_ONLY_PRIVATE_PEM));
    public_key = pc_rsa_key_new_public_pem(TEST_ONLY_PUBLIC_PEM, strlen(TEST_ONLY_PUBLIC_PEM));
    return private_key && public_key ? 0 : -1;
}

static int keys_teardown(void **state)
{
    pc_rsa_key_free(private_key);
    pc_rsa_key_free(public_key);
    private_key = public_key = NULL;
    return 0;
}

/* ---- Strings to sign -------------------------------------------------------------- */

static void test_request_string_has_five_lines_as_in_api_md(void **state)
{
    size_t len = 0;
    char *s = request_string("POST", REQ_PATH, TS, REQ_BODY, &len);
    assert_string_equal(s, REQ_STRING);
    assert_int_equal(len, strlen(REQ_STRING));
    free(s);
}

static void test_request_string_for_get_signs_an_empty_body(void **state)
{
    size_t len = 0;
    char *s = request_string("GET", GET_PATH, TS, "ignored", &len);
    assert_string_equal(s, GET_STRING);
    assert_int_equal(len, strlen(GET_STRING));
    free(s);
}

static void test_request_string_keeps_body_bytes_after_a_nul(void **state)
{
    static const char body[] = {'a', '\0', 'b'};
    size_t len = 0;
    char *s = pc_sign_request_string("POST", "/p", "1", "n", body, sizeof body, &len);
    assert_non_null(s);
    assert_int_equal(len, strlen("POST\n/p\n1\nn\n") + 3 + 1);
    assert_memory_equal(s, "POST\n/p\n1\nn\na\0b\n", len);
    free(s);
    assert_null(pc_sign_request_string(NULL, "/p", "1", "n", "", 0, NULL));
    assert_null(pc_sign_request_string("POST", "/p", "1", "n", NULL, 3, NULL));
}

static void test_notify_string_has_three_lines(void **state)
{
    size_t len = 0;
    char *s = pc_sign_notify_string(TS, NONCE, NOTIFY_BODY, strlen(NOTIFY_BODY), &len);
    assert_non_null(s);
    assert_string_equal(s, NOTIFY_STRING);
    assert_int_equal(len, strlen(NOTIFY_STRING));
    free(s);
}

/* ---- Base64 ------------------------------------------------------------------------- */

static void test_base64_matches_rfc4648_vectors(void **state)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        char *e = pc_base64_encode(plain[i], strlen(plain[i]));
        assert_non_null(e);
        assert_string_equal(e, enc[i]);
        assert_int_equal(strlen(e), pc_base64_encoded_len(strlen(plain[i])));
        free(e);

        uint8_t out[16];
        size_t len = 99;
        assert_int_equal(pc_base64_decode(enc[i], strlen(enc[i]), out, sizeof out, &len), 0);
        assert_int_equal(len, strlen(plain[i]));
        assert_memory_equal(out, plain[i], len);
    }
}

static void test_base64_round_trips_every_byte_value(void **state)
{
    uint8_t in[256], out[256];
    size_t len = 0;
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    char *e = pc_base64_encode(in, sizeof in);
    assert_non_null(e);
    assert_int_equal(pc_base64_decode(e, strlen(e), out, sizeof out, &len), 0);
    assert_int_equal(len, sizeof in);
    assert_memory_equal(in, out, sizeof in);
    free(e);
}

static void test_base64_decode_rejects_garbage(void **state)
{
    static const char *const bad[] = {
        "Zg=",      /* length not a multiple of 4 */
        "Zg",       /* missing padding */
        "Z===",     /* three pad characters */
        "====",     /* padding only */
        "Zh==",     /* non-zero bits under the padding */
        "Zm9=",     /* same, one pad character */
        "Zm9v\n",   /* white space */
        "Zm 9",     /* white space inside */
        "Zm=v",     /* padding in the middle of a group */
        "Zg==Zm9v", /* padding before the end */
        "Zm9-",     /* url-safe alphabet is not standard base64 */
        "Zm9_",     /* idem */
        "Zm9\x80",  /* high byte */
    };
    uint8_t out[16];
    size_t len = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pc_base64_decode(bad[i], strlen(bad[i]), out, sizeof out, &len),
                         PC_EINVAL);
    /* A NUL inside the declared length is garbage, not an early end. */
    assert_int_equal(pc_base64_decode("Zm\0v", 4, out, sizeof out, &len), PC_EINVAL);
    /* Too small an output buffer is reported, not overrun. */
    assert_int_equal(pc_base64_decode("Zm9vYmFy", 8, out, 5, &len), PC_ELIMIT);
    assert_int_equal(pc_base64_decode("Zm9vYmFy", 8, out, 6, &len), 0);
    assert_int_equal(len, 6);
}

static void test_base64url_uses_url_alphabet_without_padding(void **state)
{
    static const uint8_t in[] = {0xfb, 0xff, 0xbf, 0xfe};
    char *e = pc_base64url_encode(in, sizeof in);
    assert_non_null(e);
    assert_string_equal(e, "-_-__g");
    free(e);
}

/* ---- HMAC-SHA256 -------------------------------------------------------------------- */

static void test_hmac_sign_matches_openssl_vectors(void **state)
{
    static const char *const msgs[] = {REQ_STRING, GET_STRING, NOTIFY_STRING};
    static const char *const sigs[] = {REQ_HMAC, GET_HMAC, NOTIFY_HMAC};
    for (size_t i = 0; i < 3; i++) {
        char *sig = pc_hmac_sha256_sign(HMAC_KEY, strlen(HMAC_KEY), msgs[i], strlen(msgs[i]));
        assert_non_null(sig);
        assert_string_equal(sig, sigs[i]);
        free(sig);
        assert_int_equal(hmac_verify_str(HMAC_KEY, msgs[i], sigs[i]), 0);
    }
}

static void test_hmac_verify_accepts_string_built_from_parts(void **state)
{
    size_t len = 0;
    char *s = request_string("POST", REQ_PATH, TS, REQ_BODY, &len);
    assert_int_equal(
        pc_hmac_sha256_verify(HMAC_KEY, strlen(HMAC_KEY), s, len, REQ_HMAC, strlen(REQ_HMAC)), 0);
    free(s);
}

static void test_hmac_verify_rejects_changed_body_path_or_timestamp(void **state)
{
    char *s =
        request_string("POST", REQ_PATH, TS, "{\"out_trade_no\":\"A1001\",\"amount\":1998}", NULL);
    assert_int_equal(hmac_verify_str(HMAC_KEY, s, REQ_HMAC), PC_EINVAL);
    free(s);
    s = request_string("POST", "/v1/trades?lang=fr", TS, REQ_BODY, NULL);
    assert_int_equal(hmac_verify_str(HMAC_KEY, s, REQ_HMAC), PC_EINVAL);
    free(s);
    s = request_string("POST", REQ_PATH, "1700000001", REQ_BODY, NULL);
    assert_int_equal(hmac_verify_str(HMAC_KEY, s, REQ_HMAC), PC_EINVAL);
    free(s);
    s = request_string("PUT", REQ_PATH, TS, REQ_BODY, NULL);
    assert_int_equal(hmac_verify_str(HMAC_KEY, s, REQ_HMAC), PC_EINVAL);
    free(s);
}

static void test_hmac_verify_rejects_any_flipped_bit(void **state)
{
    /* Every bit of the MAC, and one bit of the message. */
    for (size_t bit = 0; bit < 8 * PC_SHA256_LEN; bit++) {
        char *sig = flip_signature_bit(REQ_HMAC, bit);
        assert_int_equal(hmac_verify_str(HMAC_KEY, REQ_STRING, sig), PC_EINVAL);
        free(sig);
    }
    char msg[sizeof REQ_STRING];
    memcpy(msg, REQ_STRING, sizeof msg);
    msg[40] ^= 0x01;
    assert_int_equal(hmac_verify_str(HMAC_KEY, msg, REQ_HMAC), PC_EINVAL);
}

static void test_hmac_verify_rejects_wrong_key(void **state)
{
    assert_int_equal(
        hmac_verify_str("test-secret-0123456789abcdefghijklmnopqrstuw", REQ_STRING, REQ_HMAC),
        PC_EINVAL);
    assert_int_equal(hmac_verify_str("", REQ_STRING, REQ_HMAC), PC_EINVAL);
}

static void test_hmac_verify_rejects_malformed_signature(void **state)
{
    static const char *const bad[] = {
        "",
        "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r0",      /* padding stripped */
        "IqJ0aRvFv8mEN8b6PvLv-DMEbU_TVC4B3W7htsQp3r0=",     /* url alphabet */
        " IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r0=",    /* leading space */
        "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r0=\n",   /* trailing newline */
        "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r1=",     /* non-canonical tail */
        "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp",         /* truncated: 30 bytes */
        "IqJ0aRvFv8mEN8b6PvLv+DMEbU/TVC4B3W7htsQp3r0AAAA=", /* extra bytes */
        "not base64 at all!!!",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(hmac_verify_str(HMAC_KEY, REQ_STRING, bad[i]), PC_EINVAL);
}

/* ---- RSA2 ------------------------------------------------------------------------------ */

static void test_rsa_sign_matches_openssl_vectors(void **state)
{
    /* PKCS#1 v1.5 is deterministic, so our signature must equal openssl's. */
    static const char *const msgs[] = {REQ_STRING, GET_STRING, NOTIFY_STRING};
    static const char *const sigs[] = {REQ_RSA, GET_RSA, NOTIFY_RSA};
    for (size_t i = 0; i < 3; i++) {
        char *sig = pc_rsa_sha256_sign(private_key, msgs[i], strlen(msgs[i]));
        assert_non_null(sig);
        assert_string_equal(sig, sigs[i]);
        free(sig);
    }
}

static void test_rsa_verify_accepts_openssl_signatures(void **state)
{
    pc_rsa_key_t *pkcs1 =
        pc_rsa_key_new_public_pem(TEST_ONLY_PUBLIC_PKCS1_PEM, strlen(TEST_ONLY_PUBLIC_PKCS1_PEM));
    assert_non_null(pkcs1);
    assert_int_equal(rsa_verify_str(public_key, REQ_STRING, REQ_RSA), 0);
    assert_int_equal(rsa_verify_str(public_key, GET_STRING, GET_RSA), 0);
    assert_int_equal(rsa_verify_str(public_key, NOTIFY_STRING, NOTIFY_RSA), 0);
    assert_int_equal(rsa_verify_str(pkcs1, REQ_STRING, REQ_RSA), 0);
    /* A private key verifies too (the platform checks its own signatures). */
    assert_int_equal(rsa_verify_str(private_key, REQ_STRING, REQ_RSA), 0);
    pc_rsa_key_free(pkcs1);
}

static void test_rsa_verify_rejects_changed_body_path_or_timestamp(void **state)
{
    char *s =
        request_string("POST", REQ_PATH, TS, "{\"out_trade_no\":\"A1001\",\"amount\":1998}", NULL);
    assert_int_equal(rsa_verify_str(public_key, s, REQ_RSA), PC_EINVAL);
    free(s);
    s = request_string("POST", "/v1/trades?lang=fr", TS, REQ_BODY, NULL);
    assert_int_equal(rsa_verify_str(public_key, s, REQ_RSA), PC_EINVAL);
    free(s);
    s = request_string("POST", REQ_PATH, "1700000001", REQ_BODY, NULL);
    assert_int_equal(rsa_verify_str(public_key, s, REQ_RSA), PC_EINVAL);
    free(s);
    /* A signature for one message does not verify another. */
    assert_int_equal(rsa_verify_str(public_key, GET_STRING, REQ_RSA), PC_EINVAL);
}

static void test_rsa_verify_rejects_flipped_bits(void **state)
{
    static const size_t bits[] = {0, 7, 8, 1000, 2040, 2047};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        char *sig = flip_signature_bit(REQ_RSA, bits[i]);
        assert_int_equal(rsa_verify_str(public_key, REQ_STRING, sig), PC_EINVAL);
        free(sig);
    }
    char msg[sizeof REQ_STRING];
    memcpy(msg, REQ_STRING, sizeof msg);
    msg[3] ^= 0x20;
    assert_int_equal(rsa_verify_str(public_key, msg, REQ_RSA), PC_EINVAL);
}

static void test_rsa_verify_rejects_wrong_key(void **state)
{
    pc_rsa_key_t *other =
        pc_rsa_key_new_public_pem(TEST_ONLY_OTHER_PUBLIC_PEM, strlen(TEST_ONLY_OTHER_PUBLIC_PEM));
    assert_non_null(other);
    assert_int_equal(rsa_verify_str(other, REQ_STRING, REQ_RSA), PC_EINVAL);
    assert_int_equal(ERR_peek_error(), 0);
    pc_rsa_key_free(other);
}

static void test_rsa_verify_rejects_malformed_signature(void **state)
{
    assert_int_equal(rsa_verify_str(public_key, REQ_STRING, ""), PC_EINVAL);
    assert_int_equal(rsa_verify_str(public_key, REQ_STRING, "not base64!"), PC_EINVAL);
    /* Well-formed base64 of the wrong length (an HMAC in the RSA header). */
    assert_int_equal(rsa_verify_str(public_key, REQ_STRING, REQ_HMAC), PC_EINVAL);
    /* The right signature with one character made invalid. */
    char sig[sizeof REQ_RSA];
    memcpy(sig, REQ_RSA, sizeof sig);
    sig[10] = '*';
    assert_int_equal(rsa_verify_str(public_key, REQ_STRING, sig), PC_EINVAL);
    /* The right signature with the padding removed. */
    assert_int_equal(pc_rsa_sha256_verify(public_key, REQ_STRING, strlen(REQ_STRING), REQ_RSA,
                                          strlen(REQ_RSA) - 2),
                     PC_EINVAL);
}

static void test_rsa_sign_then_verify_round_trips_and_public_key_cannot_sign(void **state)
{
    static const char msg[] = "any message\n";
    char *sig = pc_rsa_sha256_sign(private_key, msg, strlen(msg));
    assert_non_null(sig);
    assert_int_equal(rsa_verify_str(public_key, msg, sig), 0);
    free(sig);
    assert_null(pc_rsa_sha256_sign(public_key, msg, strlen(msg)));
    assert_true(pc_rsa_key_is_private(private_key));
    assert_false(pc_rsa_key_is_private(public_key));
}

static void test_rsa_key_parsing_refuses_bad_input(void **state)
{
    static const char garbage[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert_null(pc_rsa_key_new_public_pem("", 0));
    assert_null(pc_rsa_key_new_public_pem(garbage, strlen(garbage)));
    assert_null(pc_rsa_key_new_public_pem("hello", 5));
    /* A private key pasted where the public one belongs is not kept. */
    assert_null(pc_rsa_key_new_public_pem(TEST_ONLY_PRIVATE_PEM, strlen(TEST_ONLY_PRIVATE_PEM)));
    assert_null(pc_rsa_key_new_private_pem(TEST_ONLY_PUBLIC_PEM, strlen(TEST_ONLY_PUBLIC_PEM)));
    /* Too short a key. */
    assert_null(
        pc_rsa_key_new_public_pem(TEST_ONLY_SHORT_PUBLIC_PEM, strlen(TEST_ONLY_SHORT_PUBLIC_PEM)));
    /* Too long a key: signatures of it could never be checked. */
    assert_null(
        pc_rsa_key_new_public_pem(TEST_ONLY_LONG_PUBLIC_PEM, strlen(TEST_ONLY_LONG_PUBLIC_PEM)));
    /* An encrypted key is refused rather than prompting for a pass phrase. */
    assert_null(pc_rsa_key_new_private_pem(TEST_ONLY_ENCRYPTED_PRIVATE_PEM,
                                           strlen(TEST_ONLY_ENCRYPTED_PRIVATE_PEM)));
    /* A truncated PEM. */
    assert_null(pc_rsa_key_new_public_pem(TEST_ONLY_PUBLIC_PEM, strlen(TEST_ONLY_PUBLIC_PEM) / 2));
    pc_rsa_key_free(NULL);
    /* Refusals leave no stale entry on the OpenSSL error queue, which a later
     * TLS call by libpq or libcurl on this thread would misread. */
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_rsa_public_pem_of_private_key_is_the_public_key(void **state)
{
    char *pem = pc_rsa_key_public_pem(private_key);
    assert_non_null(pem);
    assert_string_equal(pem, TEST_ONLY_PUBLIC_PEM);
    free(pem);
}

/* ---- Header validation ---------------------------------------------------------------- */

static void test_nonce_length_and_alphabet_boundaries(void **state)
{
    char buf[80];
    memset(buf, 'a', sizeof buf);
    assert_false(pc_nonce_is_valid(buf, 0));
    assert_false(pc_nonce_is_valid(buf, 15));
    assert_true(pc_nonce_is_valid(buf, 16));
    assert_true(pc_nonce_is_valid(buf, 64));
    assert_false(pc_nonce_is_valid(buf, 65));
    assert_true(pc_nonce_is_valid("AZaz09_-AZaz09_-", 16));
    static const char bad[] = {' ', '.', '+', '/', '=', '\0', '\n', '~', (char)0xc3};
    for (size_t i = 0; i < sizeof bad; i++) {
        memset(buf, 'a', 20);
        buf[7] = bad[i];
        assert_false(pc_nonce_is_valid(buf, 20));
    }
    assert_false(pc_nonce_is_valid(NULL, 16));
}

static void test_timestamp_parse_is_strict(void **state)
{
    int64_t v = -1;
    assert_int_equal(pc_timestamp_parse("1700000000", 10, &v), 0);
    assert_int_equal(v, 1700000000);
    assert_int_equal(pc_timestamp_parse("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(pc_timestamp_parse("9223372036854775807", 19, &v), 0);
    assert_true(v == INT64_MAX);

    static const char *const bad[] = {
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "17e8",
        "0x10",
        "1.5",
        "01",
        "00",
        "abc",
        "-0",
        "17000000000000000000",
        "9223372036854775808", /* INT64_MAX + 1 */
        "99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 42;
        assert_int_equal(pc_timestamp_parse(bad[i], strlen(bad[i]), &v), PC_EINVAL);
        assert_int_equal(v, 42);
    }
    /* The declared length is what counts: a NUL or trailing bytes are garbage. */
    assert_int_equal(pc_timestamp_parse("17\0"
                                        "00",
                                        5, &v),
                     PC_EINVAL);
    assert_int_equal(pc_timestamp_parse("1700000000", 4, &v), 0);
    assert_int_equal(v, 1700);
}

static void test_timestamp_window_allows_300_but_not_301_seconds(void **state)
{
    const int64_t now = 1700000000;
    assert_true(pc_timestamp_in_window(now, now, PC_TIMESTAMP_WINDOW_S));
    assert_true(pc_timestamp_in_window(now - 300, now, PC_TIMESTAMP_WINDOW_S));
    assert_true(pc_timestamp_in_window(now + 300, now, PC_TIMESTAMP_WINDOW_S));
    assert_false(pc_timestamp_in_window(now - 301, now, PC_TIMESTAMP_WINDOW_S));
    assert_false(pc_timestamp_in_window(now + 301, now, PC_TIMESTAMP_WINDOW_S));
    /* The window is a parameter. */
    assert_true(pc_timestamp_in_window(now - 10, now, 10));
    assert_false(pc_timestamp_in_window(now - 11, now, 10));
    assert_false(pc_timestamp_in_window(now, now, -1));
    /* Extreme values neither overflow nor wrap into the window. */
    assert_false(pc_timestamp_in_window(INT64_MAX, now, PC_TIMESTAMP_WINDOW_S));
    assert_false(pc_timestamp_in_window(INT64_MIN, now, PC_TIMESTAMP_WINDOW_S));
    assert_false(pc_timestamp_in_window(INT64_MAX, INT64_MIN, PC_TIMESTAMP_WINDOW_S));
    assert_true(pc_timestamp_in_window(INT64_MAX, INT64_MAX - 300, PC_TIMESTAMP_WINDOW_S));
    assert_false(pc_timestamp_in_window(0, now, PC_TIMESTAMP_WINDOW_S));
}

static void test_idempotency_key_length_and_charset_boundaries(void **state)
{
    char buf[80];
    memset(buf, 'k', sizeof buf);
    assert_false(pc_idempotency_key_is_valid(buf, 0));
    assert_true(pc_idempotency_key_is_valid(buf, 1));
    assert_true(pc_idempotency_key_is_valid(buf, 64));
    assert_false(pc_idempotency_key_is_valid(buf, 65));
    assert_true(pc_idempotency_key_is_valid(" !~", 3)); /* 0x20, 0x21, 0x7E */
    assert_false(pc_idempotency_key_is_valid("a\x1f", 2));
    assert_false(pc_idempotency_key_is_valid("a\x7f", 2));
    assert_false(pc_idempotency_key_is_valid("a\n", 2));
    assert_false(pc_idempotency_key_is_valid("a\0b", 3));
    assert_false(pc_idempotency_key_is_valid("caf\xc3\xa9", 5));
    assert_false(pc_idempotency_key_is_valid(NULL, 1));
}

/* ---- Randomness ------------------------------------------------------------------------- */

static void test_secret_is_url_safe_and_fresh_each_time(void **state)
{
    char a[PC_SECRET_STR_LEN + 1], b[PC_SECRET_STR_LEN + 1];
    assert_int_equal(pc_secret_generate(a, sizeof a), 0);
    assert_int_equal(pc_secret_generate(b, sizeof b), 0);
    assert_int_equal(strlen(a), PC_SECRET_STR_LEN);
    assert_true(PC_SECRET_BYTES >= 32);
    /* The nonce alphabet is exactly the base64url alphabet. */
    assert_true(pc_nonce_is_valid(a, PC_SECRET_STR_LEN));
    assert_string_not_equal(a, b);
    assert_int_equal(pc_secret_generate(a, PC_SECRET_STR_LEN), PC_ELIMIT);
}

static void test_random_hex_has_requested_length_and_alphabet(void **state)
{
    char a[33], b[33];
    assert_int_equal(pc_random_hex(a, sizeof a, 16), 0);
    assert_int_equal(pc_random_hex(b, sizeof b, 16), 0);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
    assert_int_equal(pc_random_hex(a, 32, 16), PC_ELIMIT);
    assert_int_equal(pc_random_hex(a, sizeof a, 0), PC_EINVAL);
}

/* ---- SHA-256 ------------------------------------------------------------------------------ */

static void test_sha256_hex_matches_known_digests(void **state)
{
    char hex[PC_SHA256_HEX_LEN + 1];
    assert_int_equal(pc_sha256_hex("", 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(pc_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(pc_sha256_hex(REQ_STRING, strlen(REQ_STRING), hex), 0);
    assert_string_equal(hex, "9f2caae05fad1b803f5e766d51ba51ca607ad6944003708ff9e466b03c289080");
}

static void test_request_hash_frames_fields_with_lengths(void **state)
{
    (void)state;
    char hex[PC_SHA256_HEX_LEN + 1], other[PC_SHA256_HEX_LEN + 1];
    static const char body[] = "{\"amount\":1999}";
    static const char k[] = "idempotency test key";
    const size_t kl = sizeof k - 1;
    assert_int_equal(pc_request_hash_hex(k, kl, "POST", "/v1/trades", body, strlen(body), hex), 0);
    assert_int_equal(strlen(hex), PC_SHA256_HEX_LEN);
    /* Not the plain SHA-256 of the framed fields (stored, it would give a
     * card number in a body back to anyone who guesses): keyed. */
    assert_string_not_equal(hex,
                            "9e3ca265dc1d46b6a8ef43ab4ac3be1ea18830ced3712d7dc188cdc93185e8a0");
    assert_int_equal(pc_request_hash_hex(k, kl, "POST", "/v1/trades", body, strlen(body), other),
                     0);
    assert_string_equal(hex, other);
    assert_int_equal(
        pc_request_hash_hex("another key", 11, "POST", "/v1/trades", body, strlen(body), other), 0);
    assert_string_not_equal(hex, other);
    /* Moving bytes between fields changes the hash. */
    assert_int_equal(pc_request_hash_hex(k, kl, "POST", "/a", "b", 1, hex), 0);
    assert_int_equal(pc_request_hash_hex(k, kl, "POST", "/ab", "", 0, other), 0);
    assert_string_not_equal(hex, other);
    assert_int_equal(pc_request_hash_hex(k, kl, "POS", "T/a", "b", 1, other), 0);
    assert_string_not_equal(hex, other);
    assert_int_equal(pc_request_hash_hex(k, kl, NULL, "/a", "", 0, hex), PC_EINVAL);
    assert_int_equal(pc_request_hash_hex(NULL, 0, "POST", "/a", "", 0, hex), PC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_string_has_five_lines_as_in_api_md),
        cmocka_unit_test(test_request_string_for_get_signs_an_empty_body),
        cmocka_unit_test(test_request_string_keeps_body_bytes_after_a_nul),
        cmocka_unit_test(test_notify_string_has_three_lines),
        cmocka_unit_test(test_base64_matches_rfc4648_vectors),
        cmocka_unit_test(test_base64_round_trips_every_byte_value),
        cmocka_unit_test(test_base64_decode_rejects_garbage),
        cmocka_unit_test(test_base64url_uses_url_alphabet_without_padding),
        cmocka_unit_test(test_hmac_sign_matches_openssl_vectors),
        cmocka_unit_test(test_hmac_verify_accepts_string_built_from_parts),
        cmocka_unit_test(test_hmac_verify_rejects_changed_body_path_or_timestamp),
        cmocka_unit_test(test_hmac_verify_rejects_any_flipped_bit),
        cmocka_unit_test(test_hmac_verify_rejects_wrong_key),
        cmocka_unit_test(test_hmac_verify_rejects_malformed_signature),
        cmocka_unit_test_setup_teardown(test_rsa_sign_matches_openssl_vectors, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_verify_accepts_openssl_signatures, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_verify_rejects_changed_body_path_or_timestamp,
                                        keys_setup, keys_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_verify_rejects_flipped_bits, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_verify_rejects_wrong_key, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(test_rsa_verify_rejects_malformed_signature, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(
            test_rsa_sign_then_verify_round_trips_and_public_key_cannot_sign, keys_setup,
            keys_teardown),
        cmocka_unit_test(test_rsa_key_parsing_refuses_bad_input),
        cmocka_unit_test_setup_teardown(test_rsa_public_pem_of_private_key_is_the_public_key,
                                        keys_setup, keys_teardown),
        cmocka_unit_test(test_nonce_length_and_alphabet_boundaries),
        cmocka_unit_test(test_timestamp_parse_is_strict),
        cmocka_unit_test(test_timestamp_window_allows_300_but_not_301_seconds),
        cmocka_unit_test(test_idempotency_key_length_and_charset_boundaries),
        cmocka_unit_test(test_secret_is_url_safe_and_fresh_each_time),
        cmocka_unit_test(test_random_hex_has_requested_length_and_alphabet),
        cmocka_unit_test(test_sha256_hex_matches_known_digests),
        cmocka_unit_test(test_request_hash_frames_fields_with_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
