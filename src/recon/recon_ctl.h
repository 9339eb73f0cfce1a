/* payctl's reconciliation commands, sent to a running paycore's admin API
 * (PAYCORE_ADMIN_URL, default http://127.0.0.1:8081, with
 * PAYCORE_ADMIN_TOKEN) through ctl/ctl_http.h. Each prints the answer's JSON
 * and returns the exit status: 0 when paycore answered 2xx, 1 otherwise, 2 for
 * a usage error.
 *
 *   payctl recon run --channel ID --date YYYY-MM-DD [--file STATEMENT.csv] [--who NAME]
 *   payctl recon show RUN_ID
 *   payctl recon diffs [--status OPEN|AUTO_REPAIRED|RESOLVED] [--channel ID]
 *                      [--date D] [--kind KIND] [--run RUN_ID] [--limit N] [--after ID]
 *   payctl recon resolve DIFF_ID --reason TEXT [--adjust] [--who NAME]
 *
 * argv starts after the verb (as payctl's command table passes it). Lives in
 * src/recon/ next to the API it drives; linked into payctl through pclib. */
#ifndef PC_RECON_RECON_CTL_H
#define PC_RECON_RECON_CTL_H

int pc_recon_ctl_run(int argc, char **argv);
int pc_recon_ctl_show(int argc, char **argv);
int pc_recon_ctl_diffs(int argc, char **argv);
int pc_recon_ctl_resolve(int argc, char **argv);

#endif
