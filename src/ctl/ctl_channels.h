/* payctl channels ...: checks on channel configuration files. Needs
 * channel/config.h. */
#ifndef PC_CTL_CTL_CHANNELS_H
#define PC_CTL_CTL_CHANNELS_H

/* payctl channels check [channels-dir]: validates every channel file (*.json) the
 * way a reload would (default dir "channels") and prints every problem found.
 * Returns the exit status: 0 valid, 1 invalid, 2 usage error. */
int pc_ctl_channels_check(int argc, char **argv);

#endif
