// openat2(2) with RESOLVE_IN_ROOT (Linux 5.6): the one way to look a path up inside a tree that
// an image controls without a symlink or ".." taking the lookup out of it.
#define _GNU_SOURCE
#include "rbuild_sys.h"

#include <errno.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

// struct open_how and the RESOLVE_* flags (linux/openat2.h, which older headers lack).
struct rb_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};
_Static_assert(sizeof(struct rb_open_how) == 24, "struct open_how is 24 bytes (OPEN_HOW_SIZE_VER0)");
#define RB_RESOLVE_NO_MAGICLINKS 0x02
#define RB_RESOLVE_IN_ROOT 0x10
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

int rb_open_in_root(int dirfd, const char *path, int flags, int mode) {
    struct rb_open_how how = {
        .flags = (uint64_t)(unsigned)flags,
        .mode = (uint64_t)(unsigned)mode,
        .resolve = RB_RESOLVE_IN_ROOT | RB_RESOLVE_NO_MAGICLINKS,
    };
    int fd;
    do {
        fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}
