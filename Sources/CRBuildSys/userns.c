// Whether this process may create a user namespace: a child is cloned into one and exits at
// once. clone(2) is variadic in glibc's raw form, so Swift cannot make this call itself.
#define _GNU_SOURCE
#include "rbuild_sys.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int rb_userns_probe(void) {
    // With a NULL stack, clone behaves like fork; the child only calls _exit.
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) return -errno;
    if (pid == 0) _exit(0);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}
