/* HTTP for payctl's commands: the admin API (PAYCORE_ADMIN_URL, default
 * http://127.0.0.1:8081, with PAYCORE_ADMIN_TOKEN) and signed merchant calls
 * (PAYCORE_URL, default http://127.0.0.1:8080, as PAYCORE_MERCHANT_ID with
 * PAYCORE_MERCHANT_SECRET). Blocking libcurl: payctl is a command-line tool,
 * not the server. Every command group uses these instead of its own client. */
#ifndef PC_CTL_CTL_HTTP_H
#define PC_CTL_CTL_HTTP_H

/* Sends an admin request, prints the answer's body on stdout (pretty JSON
 * when it is JSON), returns the HTTP status (0 when nothing answered). */
long pc_ctl_admin(const char *method, const char *path, const char *body);
/* The same, also handing the answer's body to *answer (caller frees; NULL
 * when there was none). */
long pc_ctl_admin_keep(const char *method, const char *path, const char *body, char **answer);
/* The same for a signed merchant call; idem_key may be NULL (a fresh one is
 * made for POST). */
long pc_ctl_merchant(const char *method, const char *path, const char *body, const char *idem_key);
/* Appends to h (may be NULL) the X-Operator header naming who runs payctl
 * (PAYCORE_OPERATOR, else USER, else LOGNAME), when known: paycore keeps it
 * with refund, payout, chargeback and needs-ops actions ("ops" without it).
 * Returns the list. */
struct curl_slist;
struct curl_slist *pc_ctl_add_operator(struct curl_slist *h);
/* Who runs payctl, as that header names it; NULL when unknown or not
 * sendable (over 64 bytes, a line break). */
const char *pc_ctl_operator(void);
/* Exit status for a command from an HTTP status: 0 for 2xx, 1 otherwise. */
int pc_ctl_exit(long status);

/* `payctl admin METHOD PATH [BODY]` */
int pc_ctl_admin_cmd(int argc, char **argv);
/* `payctl call METHOD PATH [BODY]` */
int pc_ctl_call_cmd(int argc, char **argv);
/* `payctl reload` */
int pc_ctl_reload_cmd(int argc, char **argv);
/* `payctl channel enable|disable ID [REASON]` */
int pc_ctl_channel_enable(int argc, char **argv);
int pc_ctl_channel_disable(int argc, char **argv);

#endif
