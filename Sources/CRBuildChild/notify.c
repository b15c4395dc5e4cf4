// Seccomp user notification for single-id mode: the child hands its listener to the parent,
// which answers the id calls (see FakeIDs.swift). One concern: moving the listener and
// talking to it; what to answer is decided in Swift.
#define _GNU_SOURCE
#include "rbuild_child.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/seccomp.h>

// Async-signal-safe: the child calls it after loading the filter.
int rb_send_fd(int sock, int fd) {
    char byte = 0;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    memset(&u, 0, sizeof(u));
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -errno;
}

int rb_recv_fd(int sock) {
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return -EPIPE;   // the child ended before loading its filter
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -EBADMSG;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

int rb_notif_wait(int listener, int stop_fd) {
    struct pollfd p[2] = { { .fd = listener, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (p[1].revents) return 0;
        if (p[0].revents & POLLIN) return 1;
        if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) return 0;   // no task uses the filter any more
    }
}

int rb_notif_recv(int listener, struct rb_notif *out) {
    struct seccomp_notif n;
    memset(&n, 0, sizeof(n));
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) return -errno;
    out->id = n.id;
    out->pid = n.pid;
    out->arch = n.data.arch;
    out->nr = n.data.nr;
    for (int i = 0; i < 6; i++) out->args[i] = n.data.args[i];
    return 0;
}

int rb_notif_respond(int listener, uint64_t id, int64_t val, int32_t err) {
    struct seccomp_notif_resp r = { .id = id, .val = val, .error = err, .flags = 0 };
    // ENOENT: the task was killed while we answered; nothing is waiting any more.
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r) < 0 && errno != ENOENT) return -errno;
    return 0;
}

long rb_mem_read(pid_t pid, uint64_t addr, void *buf, size_t len) {
    struct iovec local = { .iov_base = buf, .iov_len = len };
    struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : (n < 0 ? -errno : -EFAULT);
}

long rb_mem_write(pid_t pid, uint64_t addr, const void *buf, size_t len) {
    struct iovec local = { .iov_base = (void *)buf, .iov_len = len };
    struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
    ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : (n < 0 ? -errno : -EFAULT);
}
