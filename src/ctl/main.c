/* payctl: the ops and product command-line tool. Subcommands are rows of the
 * table below (one file per command group: ctl_rules.c, ctl_channels.c, ...); this file only
 * dispatches and prints usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl_channels.h"
#include "ctl/ctl_http.h"
#include "ctl/ctl_rules.h"
#include "recon/recon_ctl.h"
#include "refund/refund_ctl.h"

/* `payctl chargeback enter --reference REF (--channel ID --txn CHANNEL_TXN_ID | --payment
 * PAYMENT_NO) --amount N --currency CUR [--reason CODE] [--due RFC3339]`: offline entry
 * (POST /admin/chargebacks). */
static int chargeback_enter(int argc, char **argv)
{
    static const struct {
        const char *flag, *field;
        int integer;
    } flags[] = {{"--reference", "reference", 0}, {"--channel", "channel_id", 0},
                 {"--txn", "channel_txn_id", 0},  {"--payment", "payment_no", 0},
                 {"--amount", "amount", 1},       {"--currency", "currency", 0},
                 {"--reason", "reason_code", 0},  {"--due", "evidence_due_at", 0}};
    json_t *body = json_object();
    for (int i = 0; i < argc; i += 2) {
        size_t f = 0;
        while (f < sizeof flags / sizeof flags[0] && strcmp(argv[i], flags[f].flag) != 0)
            f++;
        if (f == sizeof flags / sizeof flags[0] || i + 1 >= argc) {
            fprintf(stderr, "payctl chargeback enter: unknown or incomplete option \"%s\"\n",
                    argv[i]);
            json_decref(body);
            return 2;
        }
        char *end = NULL;
        long long n = flags[f].integer ? strtoll(argv[i + 1], &end, 10) : 0;
        if (flags[f].integer && (!*argv[i + 1] || *end)) {
            fprintf(stderr, "payctl chargeback enter: %s takes an integer\n", argv[i]);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, flags[f].field,
                            flags[f].integer ? json_integer(n) : json_string(argv[i + 1]));
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    long st = pc_ctl_admin("POST", "/admin/chargebacks", text);
    free(text);
    return pc_ctl_exit(st);
}

/* `payctl chargeback import CHANNEL DATE [FILE]`: the channel's chargeback file of DATE,
 * fetched by paycore, or the given CSV file uploaded. */
static int chargeback_import(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: payctl chargeback import CHANNEL YYYY-MM-DD [FILE.csv]\n");
        return 2;
    }
    json_t *body = json_pack("{s:s,s:s}", "channel_id", argv[0], "date", argv[1]);
    if (argc == 3) {
        FILE *f = fopen(argv[2], "rb");
        char *csv = NULL;
        size_t len = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            long sz = ftell(f);
            fseek(f, 0, SEEK_SET);
            csv = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
            len = csv ? fread(csv, 1, (size_t)sz, f) : 0;
            fclose(f);
        }
        if (!csv) {
            fprintf(stderr, "payctl: cannot read %s\n", argv[2]);
            json_decref(body);
            return 1;
        }
        json_object_set_new(body, "csv", json_stringn(csv, len));
        free(csv);
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    long st = pc_ctl_admin("POST", "/admin/chargebacks/import", text);
    free(text);
    return pc_ctl_exit(st);
}

/* `payctl settlement run YYYY-MM-DD`: settles the day (POST /admin/settlements/run). */
static int settlement_run(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: payctl settlement run YYYY-MM-DD\n");
        return 2;
    }
    json_t *body = json_pack("{s:s}", "date", argv[0]);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *answer = NULL;
    long st = pc_ctl_admin_keep("POST", "/admin/settlements/run", text, &answer);
    free(text);
    /* A run that left statements unmade is not a success for a script. */
    json_t *j = answer ? json_loads(answer, 0, NULL) : NULL;
    long long failed = json_integer_value(json_object_get(j, "failed"));
    json_decref(j);
    free(answer);
    if (st >= 200 && st < 300 && failed > 0) {
        fprintf(stderr,
                "payctl: %lld statement(s) failed; run the day again once the cause is "
                "fixed\n",
                failed);
        return 1;
    }
    return pc_ctl_exit(st);
}

typedef struct {
    const char *group;
    const char *verb;
    int (*run)(int argc, char **argv);
    const char *usage;
} command_t;

static const command_t commands[] = {
    {"rules", "test", pc_ctl_rules_test,
     "[rules-dir]          run every rule's examples (default dir: rules)"},
    {"channels", "check", pc_ctl_channels_check,
     "[channels-dir]    validate channel files (default dir: channels)"},
    {"refunds", "suspend", pc_refund_ctl_suspend, "<refund_no> --why TEXT     hold a refund"},
    {"refunds", "resume", pc_refund_ctl_resume,
     "<refund_no> --why TEXT      release a held refund"},
    {"refunds", "terminate", pc_refund_ctl_terminate,
     "<refund_no> --why TEXT   stop a refund before money leaves"},
    {"refunds", "force-fail", pc_refund_ctl_force_fail,
     "<refund_no> --why TEXT  fail it; money back to the merchant"},
    {"refunds", "confirm", pc_refund_ctl_confirm,
     "<refund_no> --why TEXT [--outcome SUCCESS|FAILED]  an OFFLINE refund done by hand"},
    {"refund-batch", "export", pc_refund_ctl_batch_export,
     "--channel ID [--method FILE|OFFLINE] [--out FILE]  pending refunds as a CSV batch"},
    {"refund-batch", "import", pc_refund_ctl_batch_import,
     "<batch_id> <result.csv> [--why TEXT]  apply a batch's result file"},
    {"recon", "run", pc_recon_ctl_run,
     "--channel ID --date YYYY-MM-DD [--file F.csv]  reconcile a day (statement fetched or F)"},
    {"recon", "show", pc_recon_ctl_show, "RUN_ID                a reconciliation run"},
    {"recon", "diffs", pc_recon_ctl_diffs,
     "[--status OPEN] [--channel ID] [--date D] [--kind K]  reconciliation differences"},
    {"recon", "resolve", pc_recon_ctl_resolve,
     "DIFF_ID --reason TEXT [--adjust]  close a difference (--adjust: through suspense)"},
    {"channel", "enable", pc_ctl_channel_enable,
     "ID [REASON]       ops switch: take payments again"},
    {"channel", "disable", pc_ctl_channel_disable, "ID [REASON]      ops switch: stop payments"},
    {"rules", "reload", pc_ctl_reload_cmd, "                   reload rules and channels now"},
    {"admin", "GET", pc_ctl_admin_cmd, "PATH                 any admin GET (e.g. /admin/alerts)"},
    {"admin", "POST", pc_ctl_admin_cmd, "PATH [BODY]         any admin POST"},
    {"call", "GET", pc_ctl_call_cmd,
     "PATH                  signed merchant GET (PAYCORE_MERCHANT_*)"},
    {"call", "POST", pc_ctl_call_cmd, "PATH BODY            signed merchant POST"},
    {"chargeback", "enter", chargeback_enter,
     "--reference REF (--channel ID --txn ID | --payment NO) --amount N --currency CUR "
     "[--reason CODE] [--due RFC3339]   offline chargeback entry"},
    {"chargeback", "import", chargeback_import,
     "CHANNEL YYYY-MM-DD [FILE.csv]   import a channel's chargeback file (fetched or given)"},
    {"settlement", "run", settlement_run, "YYYY-MM-DD      settle a day (twice changes nothing)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: payctl <command> [arguments]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %s %s %s\n", commands[i].group, commands[i].verb, commands[i].usage);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].group) == 0 && strcmp(argv[2], commands[i].verb) == 0) {
            /* "admin" and "call" take the verb as their first argument. */
            int keep_verb = !strcmp(argv[1], "admin") || !strcmp(argv[1], "call");
            return keep_verb ? commands[i].run(argc - 2, argv + 2)
                             : commands[i].run(argc - 3, argv + 3);
        }
    }
    fprintf(stderr, "payctl: unknown command \"%s %s\"\n\n", argv[1], argv[2]);
    usage(stderr);
    return 2;
}
