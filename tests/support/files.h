/* Temporary files for cmocka tests: write one, remove a tree. Header only,
 * so that unit tests (which do not link the support library) can use it;
 * include it after <cmocka.h>. */
#ifndef PC_TEST_FILES_H
#define PC_TEST_FILES_H
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Makes a new folder /tmp/<prefix>XXXXXX with a tests/ folder inside (a
 * rules folder's shape), its path into dir (at least 64 bytes). */
static inline void pc_t_rules_tmpdir(char *dir, size_t len, const char *prefix)
{
    snprintf(dir, len, "/tmp/%sXXXXXX", prefix);
    assert_non_null(mkdtemp(dir));
    char sub[600];
    snprintf(sub, sizeof sub, "%s/tests", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
}

#endif
