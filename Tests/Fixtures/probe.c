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
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>

static int result(long rc) {
    if (rc < 0) {
        printf("denied %s\n", strerrorname_np(errno));
        return 1;
    }
    printf("ok\n");
    return 0;
}

#if defined(__x86_64__)
// A call through the i386 ABI (int 0x80) from this 64-bit program: seccomp sees
// AUDIT_ARCH_I386 and i386 numbers, so the filter's compat part decides. Arguments are 32 bits.
static long int80(long nr, long a, long b, long c) {
    long rc;
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory", "r8", "r9", "r10", "r11");
    if ((int)rc < 0 && (int)rc > -4096) {
        errno = -(int)rc;
        return -1;
    }
    return rc;
}
#endif

// One system call for each rule of the seccomp profile worth testing. The arguments are chosen
// so that the kernel itself would answer something other than EPERM and ENOSYS without a filter
// (a fd, ENOTTY, EINVAL, EFAULT), so those two errnos can only come from seccomp.
static long syscall_probe(const char *name) {
    int null = open("/dev/null", O_RDONLY);
    char c = 'x';
    if (!strcmp(name, "io_uring_setup")) {
        struct io_uring_params p = {0};
        return syscall(SYS_io_uring_setup, 1, &p);
    }
    if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 0x7fff /* no such command: EINVAL */, NULL, 0);
    if (!strcmp(name, "perf_event_open")) {
        struct perf_event_attr a = {.type = PERF_TYPE_SOFTWARE, .size = sizeof a,
                                    .config = PERF_COUNT_SW_TASK_CLOCK, .exclude_kernel = 1, .exclude_hv = 1};
        return syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    }
    if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0);   // size 0: EINVAL
    if (!strcmp(name, "af_alg")) return socket(AF_ALG, SOCK_SEQPACKET, 0);
    if (!strcmp(name, "af_inet")) return socket(AF_INET, SOCK_DGRAM, 0);
    // /dev/null is no terminal: the kernel answers ENOTTY to every terminal ioctl on it.
    if (!strcmp(name, "tiocsti")) return ioctl(null, TIOCSTI, &c);
    if (!strcmp(name, "tiocsti-high")) return syscall(SYS_ioctl, null, (1UL << 32) | TIOCSTI, &c);
    if (!strcmp(name, "tioclinux")) return ioctl(null, TIOCLINUX, &c);
    if (!strcmp(name, "tiocgwinsz")) {
        struct winsize w;
        return ioctl(null, TIOCGWINSZ, &w);
    }
#if defined(__x86_64__)
    if (!strcmp(name, "i386-getpid")) return int80(20, 0, 0, 0);
    if (!strcmp(name, "i386-io_uring_setup")) return int80(425, 1, 0, 0);   // params NULL: EFAULT
    if (!strcmp(name, "i386-clone3")) return int80(435, 0, 0, 0);
    if (!strcmp(name, "i386-tiocsti")) return int80(54 /* ioctl */, null, TIOCSTI, 0);
    if (!strcmp(name, "i386-unshare")) return int80(310, CLONE_NEWUSER, 0, 0);
#endif
    fprintf(stderr, "probe: unknown system call %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe unshare-user|mount|keyctl|ptrace PID|write FILE|fds|setids FILE|syscall NAME\n");
        return 2;
    }
    const char *what = argv[1];
    if (!strcmp(what, "syscall") && argc > 2) return result(syscall_probe(argv[2]));
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
