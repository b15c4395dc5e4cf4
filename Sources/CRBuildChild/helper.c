// A long-running host helper of a sandbox or a build (a user-mode network stack, an ssh agent):
// started from a multithreaded Swift process, it must inherit nothing but what it is given and
// must not outlive rbuild, even one killed with SIGKILL. posix_spawn gets the first right but
// cannot do the second (PR_SET_PDEATHSIG), so this is a spawn done by hand the way glibc's
// posix_spawn does it: everything prepared before the clone, only async-signal-safe calls after.
#define _GNU_SOURCE
#include "rbuild_child.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define RB_CLOSE_RANGE_CLOEXEC (1U << 2)
#define RB_HELPER_MAX_FDS 8

// What the child reads, and where it leaves its errno: with CLONE_VM it writes to our memory, and
// CLONE_VFORK keeps us from reading `err` before it exec'd (the mapping is then no longer shared)
// or died.
struct helper_args {
    const char *path;
    const char *const *argv;
    const char *const *envp;
    const int *fds;
    int nfds;
    int log_fd;
    int stdin_fd;
    int die_with_parent;
    pid_t parent;
    int err;
};

__attribute__((noreturn)) static void helper_fail(struct helper_args *a, int err) {
    a->err = err > 0 ? err : EIO;
    _exit(127);
}

static int helper_main(void *arg) {
    struct helper_args *a = arg;
    // Dies with the thread that started it: Sandbox.run's thread waits for the sandbox and then
    // stops the helper itself, so this only fires when rbuild itself is gone.
    if (a->die_with_parent) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) helper_fail(a, errno);
        if (getppid() != a->parent) _exit(127);   // rbuild died before the line above
    }
    // Its own process group: a Ctrl-C at the terminal is for the sandbox (rbuild run forwards
    // it), not for the network under it.
    setpgid(0, 0);

    rb_reset_signals();

    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) helper_fail(a, errno);
    // Out of the way of 0 … 2+nfds first, then into place: a passed fd may sit on a target number.
    int moved[RB_HELPER_MAX_FDS];
    for (int i = 0; i < a->nfds; i++) {
        moved[i] = fcntl(a->fds[i], F_DUPFD_CLOEXEC, 3 + a->nfds);
        if (moved[i] < 0) helper_fail(a, errno);
    }
    int out = a->log_fd >= 0 ? a->log_fd : null;
    if (dup2(a->stdin_fd >= 0 ? a->stdin_fd : null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) helper_fail(a, errno);
    for (int i = 0; i < a->nfds; i++) {
        if (dup2(moved[i], 3 + i) < 0) helper_fail(a, errno);   // dup2 clears close-on-exec
    }
    // Everything else (another step's pipes included) closes on exec.
    if (syscall(SYS_close_range, 3 + a->nfds, ~0U, RB_CLOSE_RANGE_CLOEXEC) < 0) helper_fail(a, errno);

    execve(a->path, (char *const *)a->argv, (char *const *)a->envp);
    helper_fail(a, errno);
}

pid_t rb_spawn_helper(const char *path, const char *const *argv, const char *const *envp,
                      const int *fds, int nfds, int stdin_fd, int log_fd, int die_with_parent) {
    if (nfds < 0 || nfds > RB_HELPER_MAX_FDS) return -EINVAL;
    // posix_spawn's way: the child shares our memory on a stack of its own until it execs (no
    // copy of this large, many-threaded process: fork() here cost 1.5 ms a helper).
    const size_t stack_size = 64 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -errno;
    struct helper_args a = { path, argv, envp, fds, nfds, log_fd, stdin_fd, die_with_parent, getpid(), 0 };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(helper_main, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    if (pid < 0) return -e;
    if (a.err != 0) {
        int status;
        rb_waitpid(pid, &status);
        return -a.err;
    }
    return pid;
}

int rb_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

int rb_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0;
}
