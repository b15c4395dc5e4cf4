// Whether this process may create a user namespace: a child is cloned into one and exits at
// once. clone(2) is variadic in glibc's raw form, so Swift cannot make this call itself.
#define _GNU_SOURCE
#include "rbuild_sys.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static int probe_child(void *arg) {
    (void)arg;
    _exit(0);
}

int rb_userns_probe(void) {
    // The child shares our memory and we wait until it is gone (CLONE_VM | CLONE_VFORK, as
    // posix_spawn does): a fork-like clone would copy the page tables of this whole process
    // only to throw them away. It only calls _exit, on a stack of its own (ours is not used
    // while it runs: we are suspended until it exits).
    char stack[8192] __attribute__((aligned(16)));
    pid_t pid = clone(probe_child, stack + sizeof(stack), CLONE_NEWUSER | CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    if (pid < 0) return -errno;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}
