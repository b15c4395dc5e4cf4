// The child side of the sandbox. See rbuild_child.h for the contract.
//
// Everything after clone() in this file runs in a copy of a multithreaded Swift process: other
// threads are gone, and any lock they held (malloc's, stdio's) stays held forever. So the child
// only uses raw syscalls and async-signal-safe libc functions, on memory the parent prepared.
#define _GNU_SOURCE
#include "rbuild_child.h"
#include "rbuild_sys.h"   // rb_open_in_root: openat2 is async-signal-safe
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/seccomp.h>
#include <pthread.h>

// ---- kernel ABI not (reliably) in Debian 12's headers ---------------------------------------

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#define RB_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define RB_MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#define RB_FSOPEN_CLOEXEC 0x00000001
#define RB_FSMOUNT_CLOEXEC 0x00000001
#define RB_FSCONFIG_SET_FLAG 0
#define RB_FSCONFIG_SET_STRING 1
#define RB_FSCONFIG_CMD_CREATE 6
#define RB_MOUNT_ATTR_RDONLY 0x00000001
#define RB_MOUNT_ATTR_NOSUID 0x00000002
#define RB_MOUNT_ATTR_NODEV 0x00000004
#define RB_MOUNT_ATTR_NOEXEC 0x00000008
#define RB_MOUNT_ATTR_NOATIME 0x00000010
#define RB_MOUNT_ATTR_STRICTATIME 0x00000020
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

struct rb_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
_Static_assert(sizeof(struct rb_mount_attr) == 32, "struct mount_attr is MOUNT_ATTR_SIZE_VER0 bytes");

// One wrapper per syscall, so the call sites read like the man pages.
static int sys_open_tree(int dfd, const char *path, unsigned flags) {
    return (int)syscall(SYS_open_tree, dfd, path, flags);
}
static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags) {
    return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}
static int sys_fsopen(const char *fstype, unsigned flags) {
    return (int)syscall(SYS_fsopen, fstype, flags);
}
static int sys_fsconfig(int fd, unsigned cmd, const char *key, const void *value, int aux) {
    return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}
static int sys_fsmount(int fd, unsigned flags, unsigned attrs) {
    return (int)syscall(SYS_fsmount, fd, flags, attrs);
}
static int sys_mount_setattr(int dfd, const char *path, unsigned flags, struct rb_mount_attr *attr) {
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(*attr));
}
static int sys_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}
static int sys_close_range(unsigned first, unsigned last, unsigned flags) {
    return (int)syscall(SYS_close_range, first, last, flags);
}

// ---- reporting ------------------------------------------------------------------------------

static void report(int fd, int stage, int err, int item) {
    struct rb_report r = { .stage = stage, .err = err, .item = item, .reserved = 0 };
    ssize_t n;
    do {
        n = write(fd, &r, sizeof(r));
    } while (n < 0 && errno == EINTR);
}

__attribute__((noreturn)) static void fail(int fd, int stage, int err, int item) {
    report(fd, stage, err, item);
    _exit(125);
}

// ---- mount helpers (child only) -------------------------------------------------------------

static unsigned attrs_from_flags(unsigned long flags, int mflags) {
    unsigned a = 0;
    if (flags & MS_RDONLY || mflags & RB_MF_READONLY) a |= RB_MOUNT_ATTR_RDONLY;
    if (flags & MS_NOSUID) a |= RB_MOUNT_ATTR_NOSUID;
    if (flags & MS_NODEV) a |= RB_MOUNT_ATTR_NODEV;
    if (flags & MS_NOEXEC) a |= RB_MOUNT_ATTR_NOEXEC;
    if (flags & MS_NOATIME) a |= RB_MOUNT_ATTR_NOATIME;
    if (flags & MS_STRICTATIME) a |= RB_MOUNT_ATTR_STRICTATIME;
    return a;
}

// Creates a detached mount of a new filesystem: fsopen, one fsconfig per "key[=value]" in
// `data`, create, fsmount. Returns the mount fd or -errno.
static int make_fs(const char *fstype, const char *data, unsigned long flags, int mflags) {
    int fsfd = sys_fsopen(fstype, RB_FSOPEN_CLOEXEC);
    if (fsfd < 0) return -errno;
    if (data && data[0]) {
        char buf[1024];
        size_t len = strlen(data);
        if (len >= sizeof(buf)) { close(fsfd); return -ENAMETOOLONG; }
        memcpy(buf, data, len + 1);
        char *tok = buf;
        while (tok && *tok) {
            char *comma = strchr(tok, ',');
            if (comma) *comma = 0;
            char *eq = strchr(tok, '=');
            int rc;
            if (eq) {
                *eq = 0;
                rc = sys_fsconfig(fsfd, RB_FSCONFIG_SET_STRING, tok, eq + 1, 0);
            } else {
                rc = sys_fsconfig(fsfd, RB_FSCONFIG_SET_FLAG, tok, NULL, 0);
            }
            if (rc < 0) { int e = errno; close(fsfd); return -e; }
            tok = comma ? comma + 1 : NULL;
        }
    }
    if (sys_fsconfig(fsfd, RB_FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        int e = errno; close(fsfd); return -e;
    }
    int mfd = sys_fsmount(fsfd, RB_FSMOUNT_CLOEXEC, attrs_from_flags(flags, mflags));
    int e = errno;
    close(fsfd);
    return mfd < 0 ? -e : mfd;
}

static int set_readonly(int fd, const char *path, unsigned atflags) {
    struct rb_mount_attr attr = { .attr_set = RB_MOUNT_ATTR_RDONLY };
    return sys_mount_setattr(fd, path, atflags, &attr) < 0 ? -errno : 0;
}

// Returns an O_PATH fd for `target` inside the root, creating it (and its parents) as a
// directory or an empty file when missing. Every lookup stays inside `rootfd`; a dangling
// symlink on the way has its target created inside the root too (as docker's MkdirAll over a
// securejoin'd path does), never on the host.
static int ensure_target_depth(int rootfd, const char *target, int isdir, int create, int depth) {
    int fd = rb_open_in_root(rootfd, target, O_PATH | O_CLOEXEC, 0);
    if (fd != -ENOENT || !create) return fd;
    if (depth > 8) return -ELOOP;

    char parent[PATH_MAX];
    size_t len = strlen(target);
    while (len > 1 && target[len - 1] == '/') len--;
    if (len >= sizeof(parent)) return -ENAMETOOLONG;
    memcpy(parent, target, len);
    parent[len] = 0;
    char *slash = strrchr(parent, '/');
    const char *name = slash ? slash + 1 : parent;
    if (!*name || strlen(name) > NAME_MAX) return -ENOENT;
    char leaf[NAME_MAX + 1];
    memcpy(leaf, name, strlen(name) + 1);
    if (slash == parent) parent[1] = 0;          // parent is "/"
    else if (slash) *slash = 0;
    else memcpy(parent, "/", 2);

    int pfd = ensure_target_depth(rootfd, parent, 1, 1, depth + 1);
    if (pfd < 0) return pfd;
    int rc = 0;
    if (isdir) {
        if (mkdirat(pfd, leaf, 0755) < 0) rc = -errno;
    } else {
        int f = openat(pfd, leaf, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (f >= 0) close(f);
        else rc = -errno;
    }
    if (rc == -EEXIST) {
        // It exists, yet the path did not resolve: a dangling symlink. Create what it points to.
        char link[PATH_MAX];
        ssize_t n = readlinkat(pfd, leaf, link, sizeof(link) - 1);
        close(pfd);
        if (n <= 0) return -ENOENT;
        link[n] = 0;
        char next[PATH_MAX];
        if (link[0] == '/') {
            memcpy(next, link, (size_t)n + 1);
        } else {
            size_t plen = strlen(parent);
            if (plen + 1 + (size_t)n + 1 > sizeof(next)) return -ENAMETOOLONG;
            memcpy(next, parent, plen);
            next[plen] = '/';
            memcpy(next + plen + 1, link, (size_t)n + 1);
        }
        return ensure_target_depth(rootfd, next, isdir, 1, depth + 1);
    }
    close(pfd);
    if (rc < 0) return rc;
    return rb_open_in_root(rootfd, target, O_PATH | O_CLOEXEC, 0);
}

static int ensure_target(int rootfd, const char *target, int isdir, int create) {
    return ensure_target_depth(rootfd, target, isdir, create, 0);
}

static int attach(int mfd, int tfd) {
    return sys_move_mount(mfd, "", tfd, "", RB_MOVE_MOUNT_F_EMPTY_PATH | RB_MOVE_MOUNT_T_EMPTY_PATH) < 0 ? -errno : 0;
}

// ---- phases ---------------------------------------------------------------------------------

// A tmpfs on `dir` (in this mount namespace only: the host sees the directory stay empty)
// holding an overlay's `upper` and `work`, and the `skeleton` entries made in the upper.
// Returns 0 or a negative item for the report.
static int mount_upper_tmpfs(const char *dir, const char *upper, const char *work,
                             const char *const *skeleton, int *err) {
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) { *err = errno; return -9; }
    if (mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0) { *err = errno; return -10; }
    // Made in the upper, not through the overlay: creating them there would copy up their
    // parents, which fails for a lower owned by ids outside the user namespace.
    if (!skeleton) return 0;
    int ufd = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ufd < 0) { *err = errno; return -11; }
    for (size_t i = 0; skeleton[i]; i++) {
        const char *e = skeleton[i];
        size_t n = strlen(e);
        if (n > 0 && e[n - 1] == '/') {
            if (mkdirat(ufd, e, 0755) < 0 && errno != EEXIST) { *err = errno; close(ufd); return -11; }
        } else {
            int f = openat(ufd, e, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (f < 0) { *err = errno; close(ufd); return -11; }
            close(f);
        }
    }
    close(ufd);
    return 0;
}

// A detached overlay of snapshot directories. userxattr keeps overlay's metadata in user.*
// xattrs, which a user namespace may write (Linux 5.11+); the kernel refuses trusted.* there.
// Returns the mount fd, or -1 with *err and *item set for the report.
static int make_overlay(const char *const *lowers, const char *lowerdir, int plus, const char *upper,
                        const char *work, int *err, int *item) {
    int fsfd = sys_fsopen("overlay", RB_FSOPEN_CLOEXEC);
    if (fsfd < 0) { *err = errno; *item = -1; return -1; }
#define RB_OVERLAY_FAIL(it) do { *err = errno; *item = (it); close(fsfd); return -1; } while (0)
    if (plus) {
        for (int i = 0; lowers[i]; i++) {
            if (sys_fsconfig(fsfd, RB_FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0) RB_OVERLAY_FAIL(i);
        }
    } else if (sys_fsconfig(fsfd, RB_FSCONFIG_SET_STRING, "lowerdir", lowerdir, 0) < 0) {
        RB_OVERLAY_FAIL(-2);
    }
    if (upper) {
        if (sys_fsconfig(fsfd, RB_FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0) RB_OVERLAY_FAIL(-3);
        if (sys_fsconfig(fsfd, RB_FSCONFIG_SET_STRING, "workdir", work, 0) < 0) RB_OVERLAY_FAIL(-4);
    }
    if (sys_fsconfig(fsfd, RB_FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0) RB_OVERLAY_FAIL(-5);
    if (sys_fsconfig(fsfd, RB_FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) RB_OVERLAY_FAIL(-6);
    int mfd = sys_fsmount(fsfd, RB_FSMOUNT_CLOEXEC, 0);
    if (mfd < 0) RB_OVERLAY_FAIL(-7);
#undef RB_OVERLAY_FAIL
    close(fsfd);
    return mfd;
}

static void mount_overlay_root(struct rb_plan *p, int sfd) {
    int err = 0, item = 0;
    if (p->overlay_tmpfs) {
        item = mount_upper_tmpfs(p->overlay_tmpfs, p->overlay_upper, p->overlay_work, p->overlay_skeleton, &err);
        if (item < 0) fail(sfd, RB_STAGE_OVERLAY, err, item);
    }
    int mfd = make_overlay(p->overlay_lowers, p->overlay_lowerdir, p->overlay_lowerdir_plus, p->overlay_upper,
                           p->overlay_work, &err, &item);
    if (mfd < 0) fail(sfd, RB_STAGE_OVERLAY, err, item);
    if (sys_move_mount(mfd, "", AT_FDCWD, p->rootfs, RB_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fail(sfd, RB_STAGE_OVERLAY, errno, -8);
    close(mfd);
}


// Binds the host root on fuse_hostroot once: fuse-overlayfs daemons run chrooted there.
static int hostroot_bound;
static int bind_hostroot(struct rb_plan *p) {
    if (hostroot_bound) return 0;
    if (mount("/", p->fuse_hostroot, NULL, MS_BIND | MS_REC, NULL) < 0) return -errno;
    hostroot_bound = 1;
    return 0;
}

// Starts fuse-overlayfs (argv) chrooted in the host root's bind. The program daemonizes once
// its mount is in place, so its first process exiting 0 means the mount is ready. Returns 0,
// -1 (clone failed, errno set) or its exit status (128+N for a signal).
static int run_fuse(struct rb_plan *p, const char *const *argv) {
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        rb_reset_signals();
        if (null < 0 || chroot(p->fuse_hostroot) < 0 || chdir("/") < 0) _exit(126);
        for (int i = 0; i < 3; i++) dup2(null, i);
        static const char *const noenv[] = { NULL };
        execve(argv[0], (char *const *)argv, (char *const *)noenv);
        _exit(127);
    }
    int status = 0;
    if (rb_waitpid(pid, &status) < 0) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

// The root served by fuse-overlayfs (see rb_plan.fuse_argv).
static void mount_fuse_root(struct rb_plan *p, int sfd) {
    int err = 0;
    if (p->overlay_tmpfs) {
        int item = mount_upper_tmpfs(p->overlay_tmpfs, p->overlay_upper, p->overlay_work, p->overlay_skeleton, &err);
        if (item < 0) fail(sfd, RB_STAGE_OVERLAY, err, item);
    }
    int rc = bind_hostroot(p);
    if (rc < 0) fail(sfd, RB_STAGE_FUSE, -rc, -1);
    rc = run_fuse(p, p->fuse_argv);
    if (rc < 0) fail(sfd, RB_STAGE_FUSE, errno, -2);
    if (rc > 0) fail(sfd, RB_STAGE_FUSE, EIO, rc);
    p->rootfs = p->fuse_rootfs;
}

// A detached copy of the tree at `path` (an attached mount's directory) or, with `subpath`, of
// the part of it there, resolved inside it (never through a symlink out of it). `flags` adds
// AT_RECURSIVE. Returns the mount fd or -errno.
static int clone_tree(const char *path, const char *subpath, unsigned flags) {
    if (!subpath || !subpath[0]) {
        int fd = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | flags);
        return fd < 0 ? -errno : fd;
    }
    int dir = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -errno;
    int fd = rb_open_in_root(dir, subpath, O_PATH | O_CLOEXEC, 0);
    close(dir);
    if (fd < 0) return fd;
    int tree = sys_open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | flags);
    int e = errno;
    close(fd);
    return tree < 0 ? -e : tree;
}

// RB_MOUNT_LAYERED, before pivot_root: the snapshot mounted on its host directory `source` (in
// this mount namespace only; the kernel clones only trees attached in the caller's namespace),
// then the part at `subpath` cloned, detached. Its tmpfs is already mounted.
static int prepare_layered(struct rb_plan *p, struct rb_mount *m, int *item) {
    const char *seen = m->source;
    if (m->fuse_argv) {
        int rc = bind_hostroot(p);
        if (rc < 0) { *item = -1; return rc; }
        rc = run_fuse(p, m->fuse_argv);
        if (rc < 0) { *item = -2; return -errno; }
        if (rc > 0) { *item = rc; return -EIO; }
        seen = m->fuse_seen;
    } else {
        int err = 0;
        int mfd = make_overlay(m->lowers, m->lowerdir, p->overlay_lowerdir_plus, m->upper, m->work, &err, item);
        if (mfd < 0) return -err;
        if (sys_move_mount(mfd, "", AT_FDCWD, m->source, RB_MOVE_MOUNT_F_EMPTY_PATH) < 0) {
            err = errno;
            close(mfd);
            *item = -8;
            return -err;
        }
        close(mfd);
    }
    *item = -12;
    return clone_tree(seen, m->subpath, AT_RECURSIVE);
}

// Before pivot_root: everything that needs the host's view.
static void prepare_host_side(struct rb_plan *p, int sfd) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        fail(sfd, RB_STAGE_MOUNT_PRIVATE, errno, 0);
    // The throw-away uppers of mounted snapshots, before the host root is bound for
    // fuse-overlayfs (whose daemons must see them there).
    for (size_t i = 0; i < p->nmounts; i++) {
        struct rb_mount *m = &p->mounts[i];
        if (m->kind != RB_MOUNT_LAYERED || !m->tmpfs) continue;
        int err = 0;
        int item = mount_upper_tmpfs(m->tmpfs, m->upper, m->work, NULL, &err);
        if (item < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, err, (int)i);
    }
    if (p->fuse_argv) {
        mount_fuse_root(p, sfd);
    } else if (p->overlay_lowers) {
        mount_overlay_root(p, sfd);
    } else if (mount(p->rootfs, p->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) {
        fail(sfd, RB_STAGE_ROOTFS_BIND, errno, 0);
    }

    for (size_t i = 0; i < p->nmounts; i++) {
        struct rb_mount *m = &p->mounts[i];
        m->fd = -1;
        if (m->kind == RB_MOUNT_BIND_HOST) {
            int fd = clone_tree(m->source, m->subpath, (m->mflags & RB_MF_RECURSIVE) ? AT_RECURSIVE : 0);
            if (fd < 0) {
                if (fd == -ENOENT && (m->mflags & RB_MF_OPTIONAL)) continue;
                fail(sfd, RB_STAGE_PREPARE_MOUNT, -fd, (int)i);
            }
            if (m->mflags & RB_MF_READONLY) {
                int rc = set_readonly(fd, "", AT_EMPTY_PATH | ((m->mflags & RB_MF_RECURSIVE) ? AT_RECURSIVE : 0));
                if (rc < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, -rc, (int)i);
            }
            m->fd = fd;
        } else if (m->kind == RB_MOUNT_LAYERED) {
            int item = 0;
            int fd = prepare_layered(p, m, &item);
            if (fd < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, -fd, (int)i);
            if (m->mflags & RB_MF_READONLY) {
                int rc = set_readonly(fd, "", AT_EMPTY_PATH | AT_RECURSIVE);
                if (rc < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, -rc, (int)i);
            }
            m->fd = fd;
        } else if (m->kind == RB_MOUNT_FS_EARLY) {
            // proc and sysfs: the kernel refuses a user namespace a new instance unless an
            // unobstructed one is visible in its mount namespace (fs/namespace.c,
            // mount_too_revealing), which stops being true once the old root is detached.
            int fd = make_fs(m->fstype, m->data, m->flags, m->mflags);
            if (fd < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, -fd, (int)i);
            m->fd = fd;
        } else if (m->kind == RB_MOUNT_BINFMT) {
            int fd = make_fs("binfmt_misc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
            if (fd < 0) fail(sfd, RB_STAGE_PREPARE_MOUNT, -fd, (int)i);
            int reg = openat(fd, "register", O_WRONLY | O_CLOEXEC);
            if (reg < 0) fail(sfd, RB_STAGE_BINFMT, errno, (int)i);
            size_t len = strlen(m->data);
            ssize_t n;
            do {
                n = write(reg, m->data, len);
            } while (n < 0 && errno == EINTR);
            if (n != (ssize_t)len) fail(sfd, RB_STAGE_BINFMT, n < 0 ? errno : EIO, (int)i);
            close(reg);
            m->fd = fd;
        }
    }
}

static void enter_root(struct rb_plan *p, int sfd) {
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it then leaves
    // no path back to the host (the trick runc and bubblewrap use; see pivot_root(2)).
    if (chdir(p->rootfs) < 0) fail(sfd, RB_STAGE_PIVOT_ROOT, errno, 0);
    if (sys_pivot_root(".", ".") < 0) fail(sfd, RB_STAGE_PIVOT_ROOT, errno, 0);
    if (umount2(".", MNT_DETACH) < 0) fail(sfd, RB_STAGE_PIVOT_ROOT, errno, 1);
    if (chdir("/") < 0) fail(sfd, RB_STAGE_PIVOT_ROOT, errno, 2);
}

// RB_MOUNT_FILE: a private tmpfs holding one file with the bytes of `content_fd`, its owner
// and mode set; returns a read-only detached mount of that file, or -errno.
static int make_file_mount(struct rb_mount *m) {
    int tmp = make_fs("tmpfs", "mode=0755", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
    if (tmp < 0) return tmp;
    int f = openat(tmp, "file", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (f < 0) { int e = errno; close(tmp); return -e; }
    char buf[4096];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(m->content_fd, buf, sizeof(buf), off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { int e = errno; close(f); close(tmp); return -e; }
        if (n == 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(f, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) { int e = errno; close(f); close(tmp); return -e; }
            done += w;
        }
        off += n;
    }
    int rc = 0;
    if (fchown(f, m->uid, m->gid) < 0 || fchmod(f, m->mode & 07777) < 0) rc = -errno;
    close(f);
    if (rc < 0) { close(tmp); return rc; }
    int mfd = sys_open_tree(tmp, "file", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    int e = errno;
    close(tmp);
    if (mfd < 0) return -e;
    rc = set_readonly(mfd, "", AT_EMPTY_PATH);
    if (rc < 0) { close(mfd); return rc; }
    return mfd;
}

// Attaches `mfd` on the mount point `tfd` and closes both; a failure ends the child.
static void attach_or_fail(int mfd, int tfd, int sfd, int item) {
    int rc = attach(mfd, tfd);
    if (rc < 0) fail(sfd, RB_STAGE_MOUNT, -rc, item);
    close(mfd);
    close(tfd);
}

static void mount_inside(struct rb_plan *p, int rootfd, int sfd) {
    int empty_src = -1;    // a private tmpfs holding the empty file that masks files
    for (size_t i = 0; i < p->nmounts; i++) {
        struct rb_mount *m = &p->mounts[i];
        int isdir = (m->mflags & RB_MF_TARGET_DIR) != 0;
        int create = !(m->mflags & RB_MF_NO_CREATE);
        switch (m->kind) {
        case RB_MOUNT_BIND_HOST:
        case RB_MOUNT_LAYERED:
        case RB_MOUNT_FS_EARLY:
        case RB_MOUNT_BINFMT:
        case RB_MOUNT_FS: {
            if (m->kind != RB_MOUNT_FS && m->fd < 0) continue;   // optional source missing
            int tfd = ensure_target(rootfd, m->target, isdir, create);
            if (tfd < 0) {
                if ((tfd == -ENOENT && (m->mflags & RB_MF_OPTIONAL)) ||
                    (tfd == -EROFS && (m->mflags & RB_MF_SKIP_IF_READONLY))) {
                    if (m->fd >= 0) close(m->fd);
                    continue;
                }
                fail(sfd, RB_STAGE_MOUNT_TARGET, -tfd, (int)i);
            }
            int mfd = m->fd;
            if (m->kind == RB_MOUNT_FS) {
                mfd = make_fs(m->fstype, m->data, m->flags, m->mflags);
                if (mfd < 0) fail(sfd, RB_STAGE_MOUNT, -mfd, (int)i);
            }
            attach_or_fail(mfd, tfd, sfd, (int)i);
            m->fd = -1;
            break;
        }
        case RB_MOUNT_MASK: {
            int tfd = rb_open_in_root(rootfd, m->target, O_PATH | O_CLOEXEC, 0);
            if (tfd == -ENOENT) continue;
            if (tfd < 0) fail(sfd, RB_STAGE_MOUNT_TARGET, -tfd, (int)i);
            struct stat st;
            if (fstat(tfd, &st) < 0) fail(sfd, RB_STAGE_MOUNT, errno, (int)i);
            int mfd;
            if (S_ISDIR(st.st_mode)) {
                mfd = make_fs("tmpfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC, RB_MF_READONLY);
            } else {
                // An empty regular file on a read-only mount: reads are empty and writes fail.
                // (runc binds /dev/null, but a device node stays writable on a read-only mount.)
                if (empty_src < 0) {
                    empty_src = make_fs("tmpfs", "size=4k,mode=0555", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
                    if (empty_src < 0) fail(sfd, RB_STAGE_MOUNT, -empty_src, (int)i);
                    int f = openat(empty_src, "empty", O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
                    if (f < 0) fail(sfd, RB_STAGE_MOUNT, errno, (int)i);
                    close(f);
                }
                mfd = sys_open_tree(empty_src, "empty", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
                if (mfd < 0) {
                    mfd = -errno;
                } else {
                    int rc = set_readonly(mfd, "", AT_EMPTY_PATH);
                    if (rc < 0) fail(sfd, RB_STAGE_MOUNT, -rc, (int)i);
                }
            }
            if (mfd < 0) fail(sfd, RB_STAGE_MOUNT, -mfd, (int)i);
            attach_or_fail(mfd, tfd, sfd, (int)i);
            break;
        }
        case RB_MOUNT_READONLY: {
            int tfd = rb_open_in_root(rootfd, m->target, O_PATH | O_CLOEXEC, 0);
            if (tfd == -ENOENT) continue;
            if (tfd < 0) fail(sfd, RB_STAGE_MOUNT_TARGET, -tfd, (int)i);
            int mfd = sys_open_tree(tfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
            if (mfd < 0) fail(sfd, RB_STAGE_MOUNT, errno, (int)i);
            int rc = set_readonly(mfd, "", AT_EMPTY_PATH | AT_RECURSIVE);
            if (rc == 0) rc = attach(mfd, tfd);
            if (rc < 0) fail(sfd, RB_STAGE_MOUNT, -rc, (int)i);
            close(mfd);
            close(tfd);
            break;
        }
        case RB_MOUNT_FILE: {
            int tfd = ensure_target(rootfd, m->target, 0, create);
            if (tfd < 0) fail(sfd, RB_STAGE_MOUNT_TARGET, -tfd, (int)i);
            int mfd = make_file_mount(m);
            if (mfd < 0) fail(sfd, RB_STAGE_MOUNT, -mfd, (int)i);
            attach_or_fail(mfd, tfd, sfd, (int)i);
            break;
        }
        case RB_MOUNT_SYMLINK:
            if (symlink(m->source, m->target) < 0 && errno != EEXIST)
                fail(sfd, RB_STAGE_MOUNT, errno, (int)i);
            break;
        default:
            fail(sfd, RB_STAGE_MOUNT, EINVAL, (int)i);
        }
    }
    if (empty_src >= 0) close(empty_src);
}

static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(s);
    return rc < 0 ? -e : 0;
}

static void drop_privileges(struct rb_plan *p, int sfd) {
    // Only what the bounding set still holds is dropped: an outer runtime (a CI container) may
    // have dropped more already, and dropping needs CAP_SETPCAP, which it may not have left us.
    for (int cap = 0; cap <= p->last_cap && cap < 64; cap++) {
        if (p->capabilities & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            fail(sfd, RB_STAGE_CAPABILITIES, errno, cap);
    }
    // What we may keep is at most what we hold (a new user namespace gives its root every
    // capability; the chroot isolation has only what the container gave rbuild).
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct held[2];
    memset(held, 0, sizeof(held));
    if (syscall(SYS_capget, &hdr, held) < 0) fail(sfd, RB_STAGE_CAPABILITIES, errno, -3);
    uint64_t keep = p->capabilities & ((uint64_t)held[0].permitted | ((uint64_t)held[1].permitted << 32));
    // Raw syscalls, not glibc's wrappers: in a multithreaded process those broadcast the change
    // to every thread glibc believes exists (nptl's setxid), and in this clone those threads are
    // gone, so the wrapper would wait for them forever.
    if (p->set_groups) {
        if (syscall(SYS_setgroups, p->ngroups, p->groups) < 0) fail(sfd, RB_STAGE_SETGROUPS, errno, 0);
    }
    if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0) fail(sfd, RB_STAGE_SETGID, errno, (int)p->gid);
    // For any uid but 0 this also empties the permitted and effective sets (capabilities(7),
    // "Effect of user ID changes on capabilities"), as docker does for USER.
    if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0) fail(sfd, RB_STAGE_SETUID, errno, (int)p->uid);

    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (p->uid == 0) {
        data[0].effective = data[0].permitted = (uint32_t)keep;
        data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
    }
    // Inheritable stays empty (CVE-2022-24769), and so does the ambient set.
    if (syscall(SYS_capset, &hdr, data) < 0) fail(sfd, RB_STAGE_CAPABILITIES, errno, -1);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        fail(sfd, RB_STAGE_CAPABILITIES, errno, -2);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(sfd, RB_STAGE_NO_NEW_PRIVS, errno, 0);
}

void rb_reset_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &sa, NULL);     // fails harmlessly for glibc's internal signals
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

// Finds argv[0] on PATH the way execvp does, without allocating.
__attribute__((noreturn)) static void exec_command(struct rb_plan *p, int sfd) {
    const char *file = p->argv[0];
    char *const *argv = (char *const *)p->argv;
    char *const *envp = (char *const *)p->envp;
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        int e = errno;
        report(sfd, RB_STAGE_EXEC, e, 0);
        _exit(e == ENOENT ? 127 : 126);
    }
    int saw_eacces = 0;
    size_t flen = strlen(file);
    const char *dir = p->path_search ? p->path_search : "";
    while (*dir) {
        const char *end = strchr(dir, ':');
        size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
        char buf[PATH_MAX];
        if (dlen + 1 + flen < sizeof(buf)) {
            size_t n = 0;
            if (dlen == 0) buf[n++] = '.';
            memcpy(buf + n, dir, dlen);
            n += dlen;
            buf[n++] = '/';
            memcpy(buf + n, file, flen + 1);
            execve(buf, argv, envp);
            if (errno == EACCES) saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR) {
                int e = errno;
                report(sfd, RB_STAGE_EXEC, e, 0);
                _exit(126);
            }
        }
        if (!end) break;
        dir = end + 1;
    }
    report(sfd, RB_STAGE_EXEC, saw_eacces ? EACCES : ENOENT, 1);
    _exit(saw_eacces ? 126 : 127);
}

static int forwardable(int sig) {
    switch (sig) {
    case SIGINT: case SIGTERM: case SIGHUP: case SIGQUIT:
    case SIGUSR1: case SIGUSR2: case SIGWINCH: case SIGCONT:
        return 1;
    default:
        return 0;
    }
}

// Without a pid namespace of its own (the no-pid-sandbox and chroot isolations) the init is a
// child subreaper instead of pid 1: when the command ends, whatever it left running (reparented
// to the init) is killed as the end of a pid namespace would kill it. `children` is the init's
// /proc/thread-self/children, opened before the root changed (-1: only the command's process
// group is killed).
static void kill_leftovers(pid_t cmd, int children) {
    kill(-cmd, SIGKILL);
    for (int round = 0; round < 10000; round++) {
        int killed = 0;
        if (children >= 0) {
            char buf[4096];
            ssize_t n = pread(children, buf, sizeof(buf) - 1, 0);
            if (n > 0) {
                buf[n] = 0;
                for (char *q = buf; *q;) {
                    while (*q == ' ' || *q == '\n') q++;
                    if (!*q) break;
                    long pid = 0;
                    while (*q >= '0' && *q <= '9') pid = pid * 10 + (*q++ - '0');
                    if (*q && *q != ' ' && *q != '\n') break;
                    if (pid > 0) { kill((pid_t)pid, SIGKILL); killed = 1; }
                }
            }
        }
        int status;
        if ((pid_t)syscall(SYS_wait4, -1, &status, killed ? 0 : WNOHANG, NULL) < 0 && errno == ECHILD) return;
        if (!killed && children < 0) return;
    }
}

// pid 1 of the sandbox: reaps every zombie, forwards signals sent to it with kill(), and exits
// with the command's status (128+N when a signal N killed it), as docker --init does.
// `own_pid_ns` 0: see kill_leftovers.
__attribute__((noreturn)) static void run_init(pid_t cmd, int own_pid_ns, int children) {
    sigset_t all;
    sigfillset(&all);
    for (;;) {
        siginfo_t si;
        int sig = (int)syscall(SYS_rt_sigtimedwait, &all, &si, NULL, (size_t)(_NSIG / 8));
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            int status;
            pid_t w;
            while ((w = (pid_t)syscall(SYS_wait4, -1, &status, WNOHANG, NULL)) > 0) {
                if (w != cmd) continue;
                if (!own_pid_ns) kill_leftovers(cmd, children);
                if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
                if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
            }
        } else if (forwardable(sig) && si.si_code != SI_KERNEL) {
            kill(cmd, sig);
        }
    }
}

// RB_TASK_RECLAIM: chown every entry below `dfd` to 0:0 and make directories rwx for their
// owner, so that the invoking user (0 inside) can delete a tree that holds subordinate ids.
static int reclaim_tree(int dfd, int depth) {
    char buf[4096];
    if (depth > 4096) return -ELOOP;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
        if (n < 0) return -errno;
        if (n == 0) return 0;
        for (long off = 0; off < n;) {
            struct rb_dirent { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; };
            struct rb_dirent *d = (struct rb_dirent *)(buf + off);
            off += d->reclen;
            if (!strcmp(d->name, ".") || !strcmp(d->name, "..")) continue;
            if (fchownat(dfd, d->name, 0, 0, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT) return -errno;
            if (d->type == DT_DIR) {
                if (fchmodat(dfd, d->name, 0700, 0) < 0) return -errno;
                int sub = openat(dfd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) return -errno;
                int rc = reclaim_tree(sub, depth + 1);
                close(sub);
                if (rc < 0) return rc;
            }
        }
    }
}

static void run_task(struct rb_plan *p, int sfd) {
    int root = open(p->task_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) fail(sfd, RB_STAGE_PROBE, errno, -1);
    if (p->probe == RB_TASK_RECLAIM) {
        if (fchown(root, 0, 0) < 0 || fchmod(root, 0700) < 0) fail(sfd, RB_STAGE_PROBE, errno, -2);
        int rc = reclaim_tree(root, 0);
        if (rc < 0) fail(sfd, RB_STAGE_PROBE, -rc, -3);
        _exit(0);
    }
    char path[PATH_MAX], proc[64];
    for (int item = 0;; item++) {
        struct rb_owner_record r;
        ssize_t n = read(p->task_fd, &r, sizeof(r));
        if (n == 0) break;
        if (n != (ssize_t)sizeof(r) || r.path_len == 0 || r.path_len >= sizeof(path)) fail(sfd, RB_STAGE_PROBE, EINVAL, item);
        if (read(p->task_fd, path, r.path_len) != (ssize_t)r.path_len) fail(sfd, RB_STAGE_PROBE, EINVAL, item);
        path[r.path_len] = 0;
        int fd = rb_open_in_root(root, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd == -ENOENT) continue;   // deleted again by a later entry of the same layer
        if (fd < 0) fail(sfd, RB_STAGE_PROBE, -fd, item);
        if (fchownat(fd, "", r.uid, r.gid, AT_EMPTY_PATH) < 0) fail(sfd, RB_STAGE_PROBE, errno, item);
        struct stat st;
        if (fstat(fd, &st) == 0 && !S_ISLNK(st.st_mode)) {
            // "/proc/self/fd/N" without stdio (nothing here may take a lock).
            char digits[16];
            int nd = 0;
            for (int v = fd; nd == 0 || v > 0; v /= 10) digits[nd++] = (char)('0' + v % 10);
            memcpy(proc, "/proc/self/fd/", 14);
            for (int i = 0; i < nd; i++) proc[14 + i] = digits[nd - 1 - i];
            proc[14 + nd] = 0;
            if (chmod(proc, r.mode & 07777) < 0) fail(sfd, RB_STAGE_PROBE, errno, item);
        }
        close(fd);
    }
    _exit(0);
}

static void run_probe(struct rb_plan *p, int sfd) {
    if (p->probe == RB_TASK_OWNERS || p->probe == RB_TASK_RECLAIM) run_task(p, sfd);
    if (p->probe == RB_TASK_EXEC) {
        // No new root, no fd cleanup: the same program, with the same stdio, one user
        // namespace down. The status pipe is close-on-exec, so success reads as EOF.
        rb_reset_signals();
        execve(p->argv[0], (char *const *)p->argv, (char *const *)p->envp);
        fail(sfd, RB_STAGE_EXEC, errno, 0);
    }
    if (p->probe == RB_PROBE_USERNS) _exit(0);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(sfd, RB_STAGE_MOUNT_PRIVATE, errno, 0);
    for (size_t i = 0; i < p->nmounts; i++) {
        struct rb_mount *m = &p->mounts[i];
        if (mount(m->fstype, m->target, m->fstype, m->flags, m->data) < 0) {
            report(sfd, RB_STAGE_PROBE, errno, (int)i);
            _exit(1);
        }
    }
    _exit(0);
}

// The command's terminal (`rbuild run -t`), as runc's console: a pty of the sandbox's own devpts
// instance, so that the command's ttyname is a /dev/pts path it can open, owned by the command's
// user; its master goes to the parent over `sock`, the slave is returned.
static int open_console(struct rb_plan *p, int sock, int sfd) {
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) fail(sfd, RB_STAGE_CONSOLE, errno, 0);
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0) fail(sfd, RB_STAGE_CONSOLE, errno, 1);
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) fail(sfd, RB_STAGE_CONSOLE, errno, 2);
    if (fchown(slave, p->uid, (gid_t)-1) < 0) fail(sfd, RB_STAGE_CONSOLE, errno, 3);
    int rc = rb_send_fd(sock, master);
    if (rc < 0) fail(sfd, RB_STAGE_CONSOLE, -rc, 4);
    close(master);
    close(sock);
    return slave;
}

__attribute__((noreturn)) static void child_main(struct rb_plan *p, int syncfd, int sfd, int notify_sock, int console_sock) {
    char c;
    ssize_t n;
    do {
        n = read(syncfd, &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) fail(sfd, RB_STAGE_WAIT_IDMAP, n < 0 ? errno : EPIPE, 0);
    // A session of its own, so no controlling terminal: nothing in the sandbox can open the
    // caller's terminal through /dev/tty and push input into the caller's shell (TIOCSTI,
    // CVE-2017-5226), nor get its Ctrl-C (rbuild forwards that itself).
    if (setsid() < 0) fail(sfd, RB_STAGE_SESSION, errno, 0);

    if (p->probe != RB_PROBE_NONE) run_probe(p, sfd);

    int own_pid_ns = (p->clone_flags & RB_CLONE_NEWPID) != 0;
    int children = -1;
    if (!own_pid_ns) {
        // Orphans of the command come to the init, which kills them when the command ends.
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) fail(sfd, RB_STAGE_CHROOT, errno, 1);
        children = open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
    }
    int rootfd;
    if (p->chroot_root) {
        // No mount namespace: the parent made the root's /dev nodes and /etc files in place.
        // CAP_SYS_CHROOT is not among the command's capabilities (a second chroot is the
        // classic way out of a first), and no descriptor of the host's tree survives below.
        if (chdir(p->rootfs) < 0 || chroot(".") < 0 || chdir("/") < 0) fail(sfd, RB_STAGE_CHROOT, errno, 0);
        rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0) fail(sfd, RB_STAGE_CHROOT, errno, 0);
    } else {
        prepare_host_side(p, sfd);
        enter_root(p, sfd);
        rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0) fail(sfd, RB_STAGE_PIVOT_ROOT, errno, 3);
        mount_inside(p, rootfd, sfd);
    }

    if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) < 0)
        fail(sfd, RB_STAGE_HOSTNAME, errno, 0);
    if (p->new_netns) {
        int rc = loopback_up();
        if (rc < 0) fail(sfd, RB_STAGE_LOOPBACK, -rc, 0);
    }
    if (p->readonly_root) {
        int rc = set_readonly(rootfd, "", AT_EMPTY_PATH);
        if (rc < 0) fail(sfd, RB_STAGE_READONLY_ROOT, -rc, 0);
    }
    for (size_t i = 0; i < p->nrlimits; i++) {
        struct rlimit rl = { .rlim_cur = p->rlimits[i].soft, .rlim_max = p->rlimits[i].hard };
        if (setrlimit(p->rlimits[i].resource, &rl) < 0) fail(sfd, RB_STAGE_RLIMIT, errno, (int)i);
    }
    if (p->workdir) {
        int wfd = ensure_target(rootfd, p->workdir, 1, 1);
        if (wfd < 0) fail(sfd, RB_STAGE_WORKDIR, -wfd, 0);
        if (fchdir(wfd) < 0) fail(sfd, RB_STAGE_WORKDIR, errno, 0);
        close(wfd);
    }
    close(rootfd);
    int console = console_sock >= 0 ? open_console(p, console_sock, sfd) : -1;

    // The parent's second byte: the sandbox's network is up (its helper started while the root
    // was prepared above), or there is none to wait for. Before any credential change and before
    // PR_SET_DUMPABLE below: either closes this process's /proc/PID/ns files to the helper.
    do {
        n = read(syncfd, &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) fail(sfd, RB_STAGE_WAIT_GO, n < 0 ? errno : EPIPE, 0);
    close(syncfd);

    drop_privileges(p, sfd);
    // The init is not the command: nothing in the sandbox may ptrace it or open its /proc files.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    // The caller's choice of stdin/stdout/stderr (pipes for a build step's log, say), or the
    // terminal for all three. (The slave is close-on-exec; the close of fds below drops it.)
    for (int i = 0; i < 3; i++) {
        int fd = console >= 0 ? console : p->stdio[i];
        if (fd < 0 || fd == i) continue;
        if (dup2(fd, i) < 0) fail(sfd, RB_STAGE_CLOSE_FDS, errno, 10 + i);
    }

    // Only 0-2 and the status pipe survive; the status pipe is close-on-exec, so a successful
    // exec closes it and the parent sees EOF.
    // (and, until the filter is loaded, the socket that takes its listener to the parent; and
    // the init's list of children, close-on-exec too).
    int keep[3] = { sfd, notify_sock, children };
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
    unsigned next = 3;
    for (int i = 0; i < 3; i++) {
        if (keep[i] < 3) continue;
        if ((unsigned)keep[i] > next && sys_close_range(next, (unsigned)keep[i] - 1, 0) < 0)
            fail(sfd, RB_STAGE_CLOSE_FDS, errno, i);
        next = (unsigned)keep[i] + 1;
    }
    if (sys_close_range(next, ~0U, 0) < 0) fail(sfd, RB_STAGE_CLOSE_FDS, errno, 2);

    // Seccomp last: from here on even the init runs under the filter.
    if (p->bpf && notify_sock >= 0) {
        struct sock_fprog prog = { .len = p->bpf_len, .filter = (struct sock_filter *)p->bpf };
        int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (listener < 0) fail(sfd, RB_STAGE_SECCOMP, errno, 1);
        int rc = rb_send_fd(notify_sock, listener);
        if (rc < 0) fail(sfd, RB_STAGE_SECCOMP, -rc, 2);
        close(listener);
        close(notify_sock);
    } else if (p->bpf) {
        struct sock_fprog prog = { .len = p->bpf_len, .filter = (struct sock_filter *)p->bpf };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) fail(sfd, RB_STAGE_SECCOMP, errno, 0);
    }

    // A raw clone, not fork(): glibc's fork takes locks another parent thread may have held.
    pid_t cmd = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (cmd < 0) fail(sfd, RB_STAGE_FORK, errno, 0);
    if (cmd == 0) {
        rb_reset_signals();
        if (!own_pid_ns) {
            // A process group of its own, for kill_leftovers; and no init, no command.
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        }
        // The terminal becomes the command's controlling one, in a session of its own (the
        // init leads the sandbox's).
        if (console >= 0 && (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)) fail(sfd, RB_STAGE_CONSOLE, errno, 5);
        exec_command(p, sfd);
    }
    close(sfd);
    // The command has its own copies; the init keeps none, so a closed stdout reaches a reader.
    close(0);
    close(1);
    close(2);
    // rbuild killed (even with SIGKILL): the init dies, and with it everything in its pid
    // namespace. Set here, after every credential change (which would clear it).
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    run_init(cmd, own_pid_ns, children);
}

// ---- parent side ----------------------------------------------------------------------------

int rb_spawn(struct rb_plan *plan, struct rb_child *out) {
    int syncp[2], statusp[2], notifyp[2] = { -1, -1 }, consolep[2] = { -1, -1 };
    // A socket, not a pipe: rb_release sends with MSG_NOSIGNAL to a child that may have died.
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, syncp) < 0) return -errno;
    if (pipe2(statusp, O_CLOEXEC) < 0) {
        int e = errno;
        close(syncp[0]);
        close(syncp[1]);
        return -e;
    }
    if ((plan->fake_ids && plan->bpf && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, notifyp) < 0)
        || (plan->console && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, consolep) < 0)) {
        int e = errno;
        close(syncp[0]);
        close(syncp[1]);
        close(statusp[0]);
        close(statusp[1]);
        if (notifyp[0] >= 0) close(notifyp[0]);
        if (notifyp[1] >= 0) close(notifyp[1]);
        return -e;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // With a NULL stack, clone behaves like fork: the child continues here on a copy of it.
    pid_t pid = (pid_t)syscall(SYS_clone, plan->clone_flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        close(syncp[1]);
        close(statusp[0]);
        if (notifyp[0] >= 0) close(notifyp[0]);
        if (consolep[0] >= 0) close(consolep[0]);
        child_main(plan, syncp[0], statusp[1], notifyp[1], consolep[1]);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(syncp[0]);
    close(statusp[1]);
    if (notifyp[1] >= 0) close(notifyp[1]);
    if (consolep[1] >= 0) close(consolep[1]);
    if (pid < 0) {
        close(syncp[1]);
        close(statusp[0]);
        if (notifyp[0] >= 0) close(notifyp[0]);
        if (consolep[0] >= 0) close(consolep[0]);
        return -e;
    }
    out->pid = pid;
    out->sync_fd = syncp[1];
    out->status_fd = statusp[0];
    out->notify_fd = notifyp[0];
    out->console_fd = consolep[0];
    return 0;
}

int rb_release(int sync_fd, int count) {
    const char go[2] = { 1, 1 };
    if (count < 1 || count > 2) return -EINVAL;
    ssize_t n;
    do {
        n = send(sync_fd, go, (size_t)count, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return n == count ? 0 : -EIO;
}

static volatile sig_atomic_t forward_pid;

static void forward_handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    pid_t pid = (pid_t)forward_pid;
    if (pid > 0 && si->si_code != SI_KERNEL) kill(pid, sig);
}

void rb_forward_signals(pid_t pid) {
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };
    forward_pid = pid;
    sigset_t set;
    sigemptyset(&set);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    if (pid > 0) {
        sa.sa_sigaction = forward_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
    } else {
        sa.sa_handler = SIG_DFL;
    }
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&set, sigs[i]);
    }
    // Whoever started us may have left these blocked (a spawning thread's mask is inherited);
    // a blocked SIGTERM would never reach the sandbox.
    if (pid > 0) pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

pid_t rb_waitpid(pid_t pid, int *status) {
    pid_t r;
    do {
        r = waitpid(pid, status, 0);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int rb_read_report(int fd, struct rb_report *r) {
    size_t got = 0;
    while (got < sizeof(*r)) {
        ssize_t n = read(fd, (char *)r + got, sizeof(*r) - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) return got == 0 ? 0 : -EPIPE;
        got += (size_t)n;
    }
    return 1;
}

int rb_wifexited(int status) { return WIFEXITED(status); }
int rb_wexitstatus(int status) { return WEXITSTATUS(status); }
int rb_wifsignaled(int status) { return WIFSIGNALED(status); }
int rb_wtermsig(int status) { return WTERMSIG(status); }

int rb_set_undumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ? -errno : 0;
}

int rb_die_with_parent(void) {
    return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ? -errno : 0;
}

int rb_memfd(const char *name) {
    int fd = (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */);
    return fd < 0 ? -errno : fd;
}

/* Builds run several sandboxes at once: on SIGINT or SIGTERM every one of them is killed (each
 * is the init of its pid namespace, so everything in it dies too) and the flag tells the build to
 * stop, clean up and exit. */
#define RB_TRACKED 64
static volatile pid_t tracked[RB_TRACKED];
static volatile sig_atomic_t interrupted_signal;

static void interrupt_handler(int sig) {
    interrupted_signal = sig;
    for (int i = 0; i < RB_TRACKED; i++) {
        pid_t p = tracked[i];
        if (p > 0) kill(p, SIGKILL);
    }
}

void rb_track_sandbox(pid_t pid, int add) {
    for (int i = 0; i < RB_TRACKED; i++) {
        if (add ? __sync_bool_compare_and_swap(&tracked[i], 0, pid) : __sync_bool_compare_and_swap(&tracked[i], pid, 0)) return;
    }
}

void rb_install_interrupt_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = interrupt_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int rb_interrupted(void) { return interrupted_signal; }
