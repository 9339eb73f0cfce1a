/* Files compiled into the binary at build time (see cmake/Embed.cmake).
 * Each table ends with an entry whose name is NULL; contents are static and
 * NUL-terminated. */
#ifndef PC_CORE_EMBED_H
#define PC_CORE_EMBED_H
#include <stddef.h>

typedef struct {
    const char *name;
    const char *data;
    size_t len;
} pc_embedded_file_t;

#endif
