#include "cardbin/cardbin.h"
#include "core/error.h"
#include "core/log.h"
#include "store/migrate.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

json_t *pc_cardbin_parse(const char *text, char *err, size_t errlen)
{
    json_t *rows = json_array();
    json_t *seen = json_object(); /* bin -> its line */
    int lineno = 0, header = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[512];
        lineno++;
        if (len >= sizeof line) {
            snprintf(err, errlen, "line %d: too long", lineno);
            goto fail;
        }
        memcpy(line, p, len);
        line[len] = 0;
        if (len && line[len - 1] == '\r')
            line[--len] = 0;
        p = eol ? eol + 1 : p + len;
        if (!len || line[0] == '#')
            continue;
        if (!header) {
            header = 1;
            if (strcmp(line, "bin,brand,issuer,card_type,country,province") != 0) {
                snprintf(err, errlen,
                         "line %d: the header must be bin,brand,issuer,card_type,country,province",
                         lineno);
                goto fail;
            }
            continue;
        }
        char *f[6] = {0};
        int n = 0;
        char *save = line;
        for (char *tok; n < 6 && (tok = strsep(&save, ",")) != NULL;)
            f[n++] = tok;
        if (n < 5 || save) {
            snprintf(err, errlen, "line %d: expected 6 comma-separated fields", lineno);
            goto fail;
        }
        /* 6 or 8 digits: cards are matched on those (PC_CARDBIN_MATCH_SQL); a
         * 7-digit BIN was loaded and never matched (a CREDIT range under a
         * 6-digit DEBIT one passed as debit). */
        size_t binlen = strlen(f[0]);
        if (!digits(f[0], 6, 8) || binlen == 7 || !f[1][0] || !f[2][0] ||
            (strcmp(f[3], "DEBIT") && strcmp(f[3], "CREDIT") && strcmp(f[3], "PREPAID")) ||
            strlen(f[4]) != 2 || !isupper((unsigned char)f[4][0]) ||
            !isupper((unsigned char)f[4][1])) {
            snprintf(err, errlen,
                     "line %d: bin is 6 or 8 digits, card_type DEBIT|CREDIT|PREPAID, country "
                     "two upper-case letters",
                     lineno);
            goto fail;
        }
        /* One line a BIN: two made the whole load fail in the database (an
         * insert cannot update one row twice), and the old data stayed. */
        json_t *first = json_object_get(seen, f[0]);
        if (first) {
            snprintf(err, errlen, "line %d: bin %s is on line %d already", lineno, f[0],
                     (int)json_integer_value(first));
            goto fail;
        }
        json_object_set_new(seen, f[0], json_integer(lineno));
        json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s?}", "bin", f[0], "brand",
                                              f[1], "issuer", f[2], "card_type", f[3], "country",
                                              f[4], "province", n > 5 && f[5][0] ? f[5] : NULL));
    }
    json_decref(seen);
    return rows;
fail:
    json_decref(seen);
    json_decref(rows);
    return NULL;
}

int pc_cardbin_load_file(const char *db_url, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    char *text = NULL;
    size_t cap = 0, len = 0;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            text = realloc(text, cap);
        }
        memcpy(text + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!text) {
        snprintf(err, errlen, "%s: empty", path);
        return -1;
    }
    text[len] = 0;
    char perr[256];
    json_t *rows = pc_cardbin_parse(text, perr, sizeof perr);
    free(text);
    if (!rows) {
        snprintf(err, errlen, "%s: %s", path, perr);
        return -1;
    }
    char *doc = json_dumps(rows, JSON_COMPACT);
    int count = (int)json_array_size(rows);
    json_decref(rows);
    const char *params[1] = {doc};
    char why[200];
    json_t *r = pc_db_startup_exec(
        db_url,
        "INSERT INTO card_bins (bin, brand, issuer, card_type, country, province) SELECT bin, "
        "brand, issuer, card_type, country, province FROM json_to_recordset($1::json) AS x(bin "
        "text, brand text, issuer text, card_type text, country text, province text) ON CONFLICT "
        "(bin) DO UPDATE SET brand = EXCLUDED.brand, issuer = EXCLUDED.issuer, card_type = "
        "EXCLUDED.card_type, country = EXCLUDED.country, province = EXCLUDED.province, "
        "updated_at = now()",
        1, params, 10000, why, sizeof why);
    int ok = r != NULL;
    if (!ok)
        snprintf(err, errlen, "%s: %s", path, why);
    json_decref(r);
    free(doc);
    return ok ? count : -1;
}

static void bin_cb(void *data, int status, pc_db_res_t *res)
{
    pc_http_req_t *req = data;
    if (status) {
        pc_respond_db_error(req, status);
        return;
    }
    if (pc_db_rows(res) == 0) {
        pc_http_respond_error(req, PC_API_NOT_FOUND, NULL, "no BIN data for this number");
        return;
    }
    pc_respond_json_text(req, 200, pc_db_get(res, 0, 0));
}

static void get_bin(pc_http_req_t *req, void *data)
{
    pc_app_t *app = data;
    const char *bin = pc_http_req_param(req, "bin");
    if (!digits(bin, 6, 8)) {
        pc_http_respond_error(req, PC_API_INVALID_REQUEST, "bin", "a BIN is 6 to 8 digits");
        return;
    }
    const char *p[] = {bin};
    if (pc_db_query(app->db,
                    "SELECT json_build_object('bin', bin, 'brand', brand, 'issuer', issuer, "
                    "'card_type', card_type, 'country', country, 'province', province)::text "
                    "FROM " PC_CARDBIN_MATCH_SQL " m",
                    1, p, bin_cb, req) < 0)
        pc_respond_db_error(req, PC_EUNAVAIL);
}

void pc_app_routes_cardbins(pc_app_t *app)
{
    pc_router_add(app->api, "GET", "/v1/card-bins/{bin}", get_bin, app);
}

/* ---- the card scheme by the number's prefix ---------------------------------- */

static int prefix_num(const char *pan, int digits)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (pan[i] < '0' || pan[i] > '9')
            return -1;
        v = v * 10 + (pan[i] - '0');
    }
    return v;
}

const char *pc_card_scheme(const char *pan)
{
    if (strlen(pan) < 6)
        return "UNKNOWN";
    int p2 = prefix_num(pan, 2), p4 = prefix_num(pan, 4), p6 = prefix_num(pan, 6);
    if (pan[0] == '4')
        return "VISA";
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
        return "MASTERCARD";
    if (p2 == 34 || p2 == 37)
        return "AMEX";
    if (p2 == 62)
        return "UNIONPAY";
    if (p4 >= 3528 && p4 <= 3589)
        return "JCB";
    if (p4 == 6011 || p2 == 65 || (p6 >= 644000 && p6 <= 649999))
        return "DISCOVER";
    /* The other schemes' ranges: a number of theirs is a card number too
     * (never kept as an account number: pc_card_number_like). */
    int p3 = prefix_num(pan, 3);
    if ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
        return "DINERS";
    if (p4 >= 2200 && p4 <= 2204)
        return "MIR";
    if (p2 == 50 || (p2 >= 56 && p2 <= 58) || p4 == 6304 || p4 == 6759 ||
        (p4 >= 6761 && p4 <= 6763))
        return p3 == 508 ? "RUPAY" : "MAESTRO";
    if (p4 >= 8100 && p4 <= 8171)
        return "UNIONPAY";
    if (p2 == 60 || p2 == 81 || p2 == 82)
        return "RUPAY";
    return "UNKNOWN";
}

bool pc_card_luhn_valid(const char *digits)
{
    size_t n = strlen(digits);
    if (n == 0)
        return false;
    int sum = 0;
    /* Double every second digit counting from the check digit at the right. */
    for (size_t i = 0; i < n; i++) {
        char c = digits[n - 1 - i];
        if (c < '0' || c > '9')
            return false;
        int d = c - '0';
        if (i % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
    }
    return sum % 10 == 0;
}

bool pc_card_number_like(const char *s)
{
    size_t n = strlen(s);
    return n >= 13 && n <= 19 && pc_card_luhn_valid(s) && strcmp(pc_card_scheme(s), "UNKNOWN");
}

const char *pc_account_no_refusal(const char *acct)
{
    size_t n = acct ? strlen(acct) : 0;
    if (n < 6 || n > 34 || strspn(acct, "0123456789") != n)
        return "an ACCOUNT payee needs an account_no of 6-34 digits";
    if (pc_card_number_like(acct))
        return "this is a card number: bind the card (POST /v1/buyers/{buyer_id}/cards) and "
               "pay to a CARD payee with its card_token";
    return NULL;
}
