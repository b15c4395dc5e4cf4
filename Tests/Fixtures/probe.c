// A static program the integration tests copy into a sandbox to try what a hostile build step
// would try. Each subcommand prints "ok" when the operation succeeded, or "denied <errno name>".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>

static int result(long rc) {
    if (rc < 0) {
        printf("denied %s\n", strerrorname_np(errno));
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe unshare-user|mount|keyctl|ptrace PID|write FILE|fds|setids FILE\n");
        return 2;
    }
    const char *what = argv[1];
    if (!strcmp(what, "unshare-user")) return result(unshare(CLONE_NEWUSER));
    if (!strcmp(what, "mount")) return result(mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(what, "keyctl")) return result(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    if (!strcmp(what, "ptrace") && argc > 2) return result(ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
    if (!strcmp(what, "write") && argc > 2) {
        int fd = open(argv[2], O_WRONLY);
        if (fd < 0) return result(-1);
        return result(write(fd, "1", 1));
    }
    if (!strcmp(what, "fds")) {
        DIR *d = opendir("/proc/self/fd");
        if (!d) return result(-1);
        int self = dirfd(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
            printf("%s ", e->d_name);
        }
        printf("\n");
        return 0;
    }
    if (!strcmp(what, "setids") && argc > 2) {
        // What a package manager does to drop to _apt (42) and to give a file its owner; prints
        // each call's result, then the ids the process and the file really have.
        int fail = 0;
        printf("chown "); fail |= result(chown(argv[2], 42, 42));
        printf("setgroups "); fail |= result(setgroups(1, (gid_t[]){42}));
        printf("setresgid "); fail |= result(setresgid(42, 42, 42));
        printf("setresuid "); fail |= result(setresuid(42, 42, 42));
        struct stat st;
        if (stat(argv[2], &st) < 0) return result(-1);
        printf("uid=%u euid=%u gid=%u owner=%u:%u\n", getuid(), geteuid(), getgid(), st.st_uid, st.st_gid);
        return fail;
    }
    fprintf(stderr, "probe: unknown test %s\n", what);
    return 2;
}
