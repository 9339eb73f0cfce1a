/* payctl: the ops and product command-line tool. Subcommands are rows of the
 * table below (one file per command group: ctl_rules.c, ctl_channels.c, ...); this file only
 * dispatches and prints usage. */
#include <stdio.h>
#include <string.h>

#include "ctl/ctl_channels.h"
#include "ctl/ctl_http.h"
#include "ctl/ctl_rules.h"
#include "refund/refund_ctl.h"

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
    {"refunds", "resume", pc_refund_ctl_resume, "<refund_no> --why TEXT      release a held refund"},
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
    {"channel", "enable", pc_ctl_channel_enable,
     "ID [REASON]       ops switch: take payments again"},
    {"channel", "disable", pc_ctl_channel_disable, "ID [REASON]      ops switch: stop payments"},
    {"rules", "reload", pc_ctl_reload_cmd, "                   reload rules and channels now"},
    {"admin", "GET", pc_ctl_admin_cmd, "PATH                 any admin GET (e.g. /admin/alerts)"},
    {"admin", "POST", pc_ctl_admin_cmd, "PATH [BODY]         any admin POST"},
    {"call", "GET", pc_ctl_call_cmd,
     "PATH                  signed merchant GET (PAYCORE_MERCHANT_*)"},
    {"call", "POST", pc_ctl_call_cmd, "PATH BODY            signed merchant POST"},
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
