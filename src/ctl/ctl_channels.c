#include "ctl/ctl_channels.h"

#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "channel/config.h"
#include "core/config.h"

int pc_ctl_channels_check(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: payctl channels check [channels-dir]\n");
        return 2;
    }
    const char *dir = argc == 1 ? argv[0] : "channels";
    json_t *errors = json_array();
    pc_channel_set_t *set = NULL;
    /* The files are checked as paycore would check them in this
     * environment: outside demo mode (PAYCORE_DEMO=true) an endpoint of plain
     * http:// to another machine is refused. Whether the secrets are set is
     * only noted: the files may be checked where the secrets are not kept
     * (paycore itself refuses a channel without its secret). */
    int is_demo = 0; /* unset or not a boolean: not demo mode */
    (void)pc_config_parse_bool(getenv("PAYCORE_DEMO"), &is_demo);
    int rc = pc_channel_set_load(dir, is_demo ? PC_CHANNELS_DEMO : PC_CHANNELS_SECRETS_ELSEWHERE,
                                 &set, errors);
    if (rc == 0) {
        for (size_t i = 0; i < pc_channel_set_count(set); i++) {
            const pc_channel_t *ch = pc_channel_set_at(set, i);
            const char *secret = getenv(ch->secret_ref);
            char note[200] = "";
            if (!secret || !secret[0])
                snprintf(note, sizeof note, "  (%s is not set here)", ch->secret_ref);
            printf("ok    channels/%s.json  %s%s%s\n", ch->id, ch->endpoint,
                   ch->enabled ? "" : "  (disabled)", note);
        }
        printf("channels check: %zu channels valid\n", pc_channel_set_count(set));
        pc_channel_set_release(set);
    } else {
        size_t i;
        const json_t *e;
        json_array_foreach(errors, i, e)
        {
            printf("FAIL  %s\n", json_string_value(json_object_get(e, "message")));
        }
        printf("channels check: FAILED (%zu problems)\n", json_array_size(errors));
    }
    json_decref(errors);
    return rc == 0 ? 0 : 1;
}
