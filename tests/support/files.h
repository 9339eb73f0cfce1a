/* Temporary files for cmocka tests: write one, remove a tree. Header only,
 * so that unit tests (which do not link the support library) can use it;
 * include it after <cmocka.h>. */
#ifndef PC_TEST_FILES_H
#define PC_TEST_FILES_H
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

/* Writes text to dir/name, failing the test if it cannot. */
static inline void pc_t_write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static inline int pc_t_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything under it (not following links). */
static inline void pc_t_rm_tree(const char *dir)
{
    nftw(dir, pc_t_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif
