/* payctl's refund commands: ops actions on one refund and FILE/OFFLINE
 * batches, sent to a running paycore's admin API over HTTP (libcurl easy: a
 * command-line tool may block). The admin API is found through
 * PAYCORE_ADMIN_URL (default http://127.0.0.1:8081) and authenticated with
 * PAYCORE_ADMIN_TOKEN. Every command prints the answer's JSON and returns the
 * exit status: 0 when paycore answered 2xx, 1 otherwise, 2 for a usage error.
 *
 *   payctl refunds suspend|resume|terminate|force-fail <refund_no> --why TEXT
 *   payctl refunds confirm <refund_no> --why TEXT [--outcome SUCCESS|FAILED]
 *                                                  [--failure-code CODE]
 *   payctl refund-batch export --channel ID [--method FILE|OFFLINE] [--out FILE]
 *   payctl refund-batch import <batch_id> <result.csv> [--why TEXT]
 *
 * argv starts after the verb (as payctl's command table passes it). Lives in
 * src/refund/ next to the API it drives; linked into payctl through pclib. */
#ifndef PC_REFUND_REFUND_CTL_H
#define PC_REFUND_REFUND_CTL_H

int pc_refund_ctl_suspend(int argc, char **argv);
int pc_refund_ctl_resume(int argc, char **argv);
int pc_refund_ctl_terminate(int argc, char **argv);
int pc_refund_ctl_force_fail(int argc, char **argv);
int pc_refund_ctl_confirm(int argc, char **argv);
int pc_refund_ctl_batch_export(int argc, char **argv);
int pc_refund_ctl_batch_import(int argc, char **argv);

#endif
