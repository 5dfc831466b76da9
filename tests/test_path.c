// test_path.c: path.h's path_resolve against realpath and against the expected string on a
// small tree with relative, absolute, dangling and looping symbolic links, "." and "..", and
// names that do not exist yet; then in a folder deeper than PATH_MAX, where realpath gives up
// (the sanitizers' always, glibc's for a relative start) and path_resolve and
// path_check_apart must still work.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "path.h"
#include "test.h"

// path_resolve(path) is want (NULL: cannot be resolved); where realpath resolves path too, it
// agrees.
static void expect_resolved(const char *path, const char *want) {
    char *got = path_resolve(path), *real = realpath(path, NULL);
    const bool same = want ? got && strcmp(got, want) == 0 : got == NULL;
    EXPECT(same && (!real || (got && strcmp(real, got) == 0)), "path_resolve(%s) = %s (want %s, realpath %s)", path,
           got ? got : "NULL", want ? want : "NULL", real ? real : "NULL");
    free(got);
    free(real);
}

// expect_resolved for BASE/rel, wanting BASE + want_rel (NULL: cannot be resolved).
static void expect_under(const char *base, const char *rel, const char *want_rel) {
    char *p = path_join(base, rel), *want = want_rel ? path_fmt("%s%s", base, want_rel) : NULL;
    expect_resolved(p, want);
    free(p);
    free(want);
}

// The tree under base (a folder of its own): a/b, a/f, l1 -> a/b, l2 -> BASE/a, dl -> a/missing,
// loop1 <-> loop2.
static void test_tree(const char *base) {
    char *a = path_join(base, "a"), *b = path_fmt("%s/a/b", base), *abs_a = path_fmt("%s/a", base);
    CHECK(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0);
    CHECK(test_sh("cd %s && : > a/f && ln -s a/b l1 && ln -s %s l2 && ln -s a/missing dl && ln -s loop2 loop1 && "
                  "ln -s loop1 loop2", base, abs_a) == 0);
    char *p;
    expect_under(base, "a/b", "/a/b");
    expect_under(base, "a/./b/", "/a/b");
    expect_under(base, "a//b/..", "/a");
    expect_under(base, "l1", "/a/b");
    expect_under(base, "l1/..", "/a");  // ".." of where the link leads, as realpath does
    expect_under(base, "l2/b/../f", "/a/f");
    expect_under(base, "a/missing/x", "/a/missing/x");
    expect_under(base, "dl/x", "/a/missing/x");
    expect_under(base, "a/f/x", "/a/f/x");
    expect_under(base, "a/missing/../x", NULL);
    expect_under(base, "loop1", NULL);
    expect_under(base, "loop1/x", NULL);
    expect_resolved("/", "/");
    expect_resolved("/..", "/");
    expect_resolved("", NULL);
    char *cwd = getcwd(NULL, 0);
    CHECK(chdir(base) == 0);
    expect_resolved(".", base);
    p = path_fmt("%s/a/b", base);
    expect_resolved("a/../l1", p);
    free(p);
    CHECK(chdir(cwd) == 0);
    free(cwd);
    free(a);
    free(b);
    free(abs_a);
}

// A folder 17 names of 250 bytes below base (over PATH_MAX), made and entered a name at a time.
static void test_deep(const char *base) {
    char name[251];
    memset(name, 'd', 250);
    name[250] = '\0';
    char *cwd = getcwd(NULL, 0), *want = xstrdup(base);
    CHECK(chdir(base) == 0);
    for (int i = 0; i < 17; i++) {
        CHECK(mkdir(name, 0755) == 0 && chdir(name) == 0);
        char *next = path_join(want, name);
        free(want);
        want = next;
    }
    CHECK(mkdir("model", 0755) == 0);
    EXPECT(strlen(want) > PATH_MAX, "the deep folder's path is longer than PATH_MAX (%zu bytes)", strlen(want));
    expect_resolved(".", want);
    char *model = path_join(want, "model"), *out = path_fmt("%s/model/new/out", want);
    expect_resolved("model", model);
    expect_resolved("model/new/out", out);
    expect_resolved("model/new/../x", NULL);
    Error err = {0};
    EXPECT(!path_check_apart("output_dir", "model/new/out", "base_model", "model", &err) &&
               strstr(err.msg, "output_dir 'model/new/out' is inside base_model 'model'") && err.status == EXIT_BAD_INPUT,
           "path_check_apart refuses an output inside an input deeper than PATH_MAX: %.120s", err.msg);
    EXPECT(path_check_apart("output_dir", "out", "base_model", "model", &err), "and lets a folder beside it through");
    CHECK(chdir(cwd) == 0);
    free(model);
    free(out);
    free(want);
    free(cwd);
}

int main(void) {
    char tmpl[] = "/tmp/qlora-test-path-XXXXXX";
    CHECK(mkdtemp(tmpl));
    char *base = realpath(tmpl, NULL);  // /tmp may itself be a link
    CHECK(base);
    char *tree = path_join(base, "tree"), *deep = path_join(base, "deep");
    CHECK(mkdir(tree, 0755) == 0 && mkdir(deep, 0755) == 0);
    test_tree(tree);
    test_deep(deep);
    test_sh("rm -rf %s", base);  // GNU rm removes trees deeper than PATH_MAX
    free(tree);
    free(deep);
    free(base);
    return test_summary("test_path");
}
