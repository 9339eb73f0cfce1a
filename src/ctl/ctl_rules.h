/* payctl rules ...: product staff's view of the rules engine, without a
 * server. Needs rules/rules.h. */
#ifndef PC_CTL_CTL_RULES_H
#define PC_CTL_CTL_RULES_H

/* payctl rules test [rules-dir]: loads every rule (default dir "rules") into
 * a fresh sandbox, runs its examples and prints each failure with the example,
 * what was expected and what came back, or the file:line of an error.
 * argv holds the arguments after "rules test". Returns the exit status: 0 all
 * passed, 1 something failed, 2 usage error. */
int pc_ctl_rules_test(int argc, char **argv);

#endif
