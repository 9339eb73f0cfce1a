#include "recon/recon_ctl.h"
#include "ctl/ctl_http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value after --name in argv, or NULL; *bad is set when --name is last. */
static const char *opt(int argc, char **argv, const char *name, int *bad)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], name) != 0)
            continue;
        if (i + 1 >= argc) {
            *bad = 1;
            return NULL;
        }
        return argv[i + 1];
    }
    return NULL;
}

static int flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

/* Characters a query value may hold here without escaping: ids, dates,
 * kinds and numbers. */
static int plain(const char *s)
{
    return s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
                    strlen(s);
}

static int usage(const char *text)
{
    fprintf(stderr, "usage: payctl recon %s\n", text);
    return 2;
}

/* --who, else whoever payctl says runs it (PAYCORE_OPERATOR first: under
 * sudo USER is root), else "ops". */
static const char *who_default(const char *who)
{
    const char *u = pc_ctl_operator();
    return who ? who : u ? u : "ops";
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *p = malloc(cap);
    size_t n;
    while (p && (n = fread(p + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    fclose(f);
    if (p)
        p[len] = 0;
    return p;
}

int pc_recon_ctl_run(int argc, char **argv)
{
    int bad = 0;
    const char *ch = opt(argc, argv, "--channel", &bad);
    const char *date = opt(argc, argv, "--date", &bad);
    const char *file = opt(argc, argv, "--file", &bad);
    const char *who = who_default(opt(argc, argv, "--who", &bad));
    if (bad || !plain(ch) || !plain(date))
        return usage("run --channel ID --date YYYY-MM-DD [--file STATEMENT.csv] [--who NAME]");
    long st;
    if (file) {
        char *csv = read_file(file);
        if (!csv) {
            fprintf(stderr, "payctl: cannot read %s\n", file);
            return 1;
        }
        char path[256];
        snprintf(path, sizeof path, "/admin/recon/runs/upload?channel_id=%s&date=%s%s%s", ch, date,
                 plain(who) ? "&who=" : "", plain(who) ? who : "");
        st = pc_ctl_admin("POST", path, csv);
        free(csv);
    } else {
        json_t *b = json_pack("{s:s,s:s,s:s}", "channel_id", ch, "date", date, "who", who);
        char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        if (!body)
            return 1;
        st = pc_ctl_admin("POST", "/admin/recon/runs", body);
        free(body);
    }
    return pc_ctl_exit(st);
}

int pc_recon_ctl_show(int argc, char **argv)
{
    if (argc < 1 || strspn(argv[0], "0123456789") != strlen(argv[0]) || !argv[0][0])
        return usage("show RUN_ID");
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/runs/%s", argv[0]);
    return pc_ctl_exit(pc_ctl_admin("GET", path, NULL));
}

int pc_recon_ctl_diffs(int argc, char **argv)
{
    static const char *const names[][2] = {{"--status", "status"}, {"--channel", "channel_id"},
                                           {"--date", "date"},     {"--kind", "kind"},
                                           {"--run", "run_id"},    {"--limit", "limit"},
                                           {"--after", "after"}};
    char path[512] = "/admin/recon/diffs";
    size_t len = strlen(path);
    int bad = 0, n = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = opt(argc, argv, names[i][0], &bad);
        if (!v)
            continue;
        if (!plain(v))
            bad = 1;
        len += (size_t)snprintf(path + len, sizeof path - len, "%c%s=%s", n++ ? '&' : '?',
                                names[i][1], v);
    }
    if (bad || len >= sizeof path)
        return usage("diffs [--status OPEN|AUTO_REPAIRED|RESOLVED] [--channel ID] [--date D] "
                     "[--kind KIND] [--run RUN_ID] [--limit N] [--after ID]");
    return pc_ctl_exit(pc_ctl_admin("GET", path, NULL));
}

int pc_recon_ctl_resolve(int argc, char **argv)
{
    int bad = 0;
    const char *reason = opt(argc, argv, "--reason", &bad);
    const char *who = who_default(opt(argc, argv, "--who", &bad));
    if (argc < 1 || bad || !reason || !argv[0][0] ||
        strspn(argv[0], "0123456789") != strlen(argv[0]))
        return usage("resolve DIFF_ID --reason TEXT [--adjust] [--who NAME]");
    json_t *b = json_pack("{s:s,s:b,s:s}", "reason", reason, "adjust", flag(argc, argv, "--adjust"),
                          "who", who);
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!body)
        return 1;
    char path[96];
    snprintf(path, sizeof path, "/admin/recon/diffs/%s/resolve", argv[0]);
    long st = pc_ctl_admin("POST", path, body);
    free(body);
    return pc_ctl_exit(st);
}
