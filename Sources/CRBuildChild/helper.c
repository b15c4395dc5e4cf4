// A long-running host helper of one sandbox (its user-mode network stack): started from a
// multithreaded Swift process, it must inherit nothing but what it is given and must not outlive
// rbuild, even one killed with SIGKILL. posix_spawn gets the first right but cannot do the second
// (PR_SET_PDEATHSIG), so this is the child side of a spawn done by hand, after the pattern of
// rb_spawn: everything prepared before the clone, only async-signal-safe calls after it.
#define _GNU_SOURCE
#include "rbuild_child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
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

__attribute__((noreturn)) static void helper_fail(int errfd, int err) {
    ssize_t n;
    do {
        n = write(errfd, &err, sizeof(err));
    } while (n < 0 && errno == EINTR);
    _exit(127);
}

__attribute__((noreturn)) static void helper_child(const char *path, const char *const *argv, const char *const *envp,
                                                   const int *fds, int nfds, int log_fd, pid_t parent, int errfd) {
    // Dies with the thread that started it: Sandbox.run's thread waits for the sandbox and then
    // stops the helper itself, so this only fires when rbuild itself is gone.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) helper_fail(errfd, errno);
    if (getppid() != parent) _exit(127);   // rbuild died before the line above
    // Its own process group: a Ctrl-C at the terminal is for the sandbox (rbuild run forwards
    // it), not for the network under it.
    setpgid(0, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &sa, NULL);         // fails harmlessly for glibc's internal signals
    }

    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) helper_fail(errfd, errno);
    // Out of the way of 0 … 2+nfds first, then into place: a passed fd may sit on a target number.
    int moved[RB_HELPER_MAX_FDS];
    for (int i = 0; i < nfds; i++) {
        moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + nfds);
        if (moved[i] < 0) helper_fail(errfd, errno);
    }
    int out = log_fd >= 0 ? log_fd : null;
    if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) helper_fail(errfd, errno);
    for (int i = 0; i < nfds; i++) {
        if (dup2(moved[i], 3 + i) < 0) helper_fail(errfd, errno);   // dup2 clears close-on-exec
    }
    // Everything else (another step's pipes included) closes on exec; `errfd` stays usable until then.
    if (syscall(SYS_close_range, 3 + nfds, ~0U, RB_CLOSE_RANGE_CLOEXEC) < 0) helper_fail(errfd, errno);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(path, (char *const *)argv, (char *const *)envp);
    helper_fail(errfd, errno);
}

pid_t rb_spawn_helper(const char *path, const char *const *argv, const char *const *envp,
                      const int *fds, int nfds, int log_fd) {
    if (nfds < 0 || nfds > RB_HELPER_MAX_FDS) return -EINVAL;
    int errp[2];
    if (pipe2(errp, O_CLOEXEC) < 0) return -errno;
    pid_t parent = getpid();
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // A raw clone, not fork(): glibc's fork takes locks another thread may hold.
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) helper_child(path, argv, envp, fds, nfds, log_fd, parent, errp[1]);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(errp[1]);
    if (pid < 0) {
        close(errp[0]);
        return -e;
    }
    // EOF: the exec happened (the pipe closed on it). An int: the child's errno before it.
    int childErr = 0;
    ssize_t n;
    do {
        n = read(errp[0], &childErr, sizeof(childErr));
    } while (n < 0 && errno == EINTR);
    close(errp[0]);
    if (n == (ssize_t)sizeof(childErr)) {
        int status;
        rb_waitpid(pid, &status);
        return -(childErr > 0 ? childErr : EIO);
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
