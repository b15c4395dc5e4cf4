// The C edge of the sandbox: everything that must run between clone() and execve().
//
// The Swift parent prepares an `rb_plan` (strings, mount steps, BPF, fds) before calling
// rb_spawn(). The cloned child only reads that plan and calls async-signal-safe functions
// and raw syscalls: no malloc, no stdio, no locks. Any failure travels back to the parent as
// an `rb_report` on the status pipe, naming the stage, the errno and the plan item.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Where in the child's setup a failure happened. The Swift side turns these into messages.
enum rb_stage {
    RB_STAGE_NONE = 0,
    RB_STAGE_WAIT_IDMAP,       // reading the "id maps written" byte from the parent
    RB_STAGE_MOUNT_PRIVATE,    // making the inherited mount tree private
    RB_STAGE_ROOTFS_BIND,      // binding the rootfs onto itself
    RB_STAGE_PREPARE_MOUNT,    // open_tree()/fsmount() of a host-side source (item = mount index)
    RB_STAGE_PIVOT_ROOT,
    RB_STAGE_MOUNT,            // attaching mount step `item` inside the new root
    RB_STAGE_MOUNT_TARGET,     // creating the mount point of step `item`
    RB_STAGE_HOSTNAME,
    RB_STAGE_LOOPBACK,
    RB_STAGE_READONLY_ROOT,
    RB_STAGE_RLIMIT,           // item = index in rlimits
    RB_STAGE_WORKDIR,
    RB_STAGE_SETGROUPS,
    RB_STAGE_SETGID,
    RB_STAGE_SETUID,
    RB_STAGE_CAPABILITIES,
    RB_STAGE_NO_NEW_PRIVS,
    RB_STAGE_CLOSE_FDS,
    RB_STAGE_SECCOMP,
    RB_STAGE_FORK,
    RB_STAGE_EXEC,             // item = 1 when no PATH entry held the command
    RB_STAGE_PROBE,            // probe mode: the probed operation failed
    RB_STAGE_BINFMT,           // registering an interpreter in the private binfmt_misc (item = mount index)
    RB_STAGE_OVERLAY,          // mounting the overlay root (item = index of the lower dir, or -1)
    RB_STAGE_FUSE,             // starting fuse-overlayfs (item = -1 bind, -2 clone, else its exit status)
    RB_STAGE_SESSION,          // setsid(): leaving the caller's session and terminal
    RB_STAGE_CONSOLE,          // the command's pseudo-terminal (item: 0 open, 1 unlock, 2 peer, 3 owner, 4 send, 5 controlling)
    RB_STAGE_CHROOT,           // the chroot isolation: chroot(rootfs) (item 0), opening /proc's child list (1)
    RB_STAGE_WAIT_GO,          // reading the second byte ("the network is up: start the command")
};

/// Constants Swift cannot import from the glibc macros (values are the kernel ABI).
enum rb_clone_flags {
    RB_CLONE_NEWNS = 0x00020000,
    RB_CLONE_NEWCGROUP = 0x02000000,
    RB_CLONE_NEWUTS = 0x04000000,
    RB_CLONE_NEWIPC = 0x08000000,
    RB_CLONE_NEWUSER = 0x10000000,
    RB_CLONE_NEWPID = 0x20000000,
    RB_CLONE_NEWNET = 0x40000000,
};
enum rb_ms_flags {
    RB_MS_RDONLY = 1,
    RB_MS_NOSUID = 2,
    RB_MS_NODEV = 4,
    RB_MS_NOEXEC = 8,
    RB_MS_NOATIME = 1024,
    RB_MS_STRICTATIME = 1 << 24,
};

/// What one mount step does. Steps run in plan order inside the new root, after pivot_root,
/// so a symlink in the image can never send a mount or a created mount point outside it.
enum rb_mount_kind {
    /// Bind a host path (`source`, resolved before pivot_root) onto `target`.
    RB_MOUNT_BIND_HOST = 1,
    /// A new filesystem (`fstype`, `data`, `flags`) mounted at `target`.
    RB_MOUNT_FS,
    /// A filesystem that the kernel only lets a user namespace mount while the host's
    /// instance is still visible (proc, sysfs): created before pivot_root, attached after.
    RB_MOUNT_FS_EARLY,
    /// Hide `target`: /dev/null over a file, an empty read-only tmpfs over a directory.
    RB_MOUNT_MASK,
    /// Make `target` (and everything below it) read-only.
    RB_MOUNT_READONLY,
    /// Create a symlink at `target` pointing to `source`.
    RB_MOUNT_SYMLINK,
    /// A private binfmt_misc instance (Linux >= 6.7 lets a user namespace have its own), with
    /// `data` written to its `register` file before pivot_root: with the F flag the kernel opens
    /// the host interpreter named there right away. Attached at `target` so that it lives as
    /// long as the sandbox.
    RB_MOUNT_BINFMT,
    /// A snapshot's root mounted besides the sandbox's own (RUN --mount from a stage or an
    /// image): an overlay of `lowers` (read-only, or over a throw-away tmpfs upper) or a
    /// fuse-overlayfs instance, made before pivot_root; the part at `subpath` (resolved inside
    /// it) is attached at `target`. `source` is an empty host directory to mount it on.
    RB_MOUNT_LAYERED,
    /// A file whose bytes are read from `content_fd` (a memfd: secrets never touch a disk),
    /// written into a private tmpfs with `uid`, `gid`, `mode`, and bound read-only at `target`.
    RB_MOUNT_FILE,
};

enum rb_mount_flags {
    RB_MF_READONLY = 1,        // make the mounted tree read-only (mount_setattr, recursive)
    RB_MF_RECURSIVE = 2,       // bind the whole tree below `source`
    RB_MF_TARGET_DIR = 4,      // the mount point is a directory (else a file)
    RB_MF_OPTIONAL = 8,        // skip silently when the source or target does not exist
    RB_MF_NO_CREATE = 16,      // never create the mount point (only mount if it exists)
    RB_MF_SKIP_IF_READONLY = 32, // a missing mount point on a read-only root: skip the step
};

struct rb_mount {
    int kind;                  // enum rb_mount_kind
    int mflags;                // enum rb_mount_flags
    const char *source;        // host path, or symlink content
    const char *target;        // absolute path inside the new root
    const char *fstype;
    const char *data;          // fs options, e.g. "mode=755,size=65536k"
    unsigned long flags;       // MS_* flags for RB_MOUNT_FS
    int fd;                    // child-private: the detached tree prepared before pivot_root
    const char *subpath;       // BIND_HOST, LAYERED: the part of the source to mount, resolved
                               // inside it (never through a symlink out of it); NULL: all of it
    // RB_MOUNT_LAYERED (see rb_plan's overlay_* fields for the meaning of each):
    const char *const *lowers; // NULL-terminated, topmost first
    const char *lowerdir;      // the joined form for kernels without "lowerdir+"
    const char *upper;         // NULL: a read-only overlay
    const char *work;
    const char *tmpfs;         // mount a tmpfs here first; upper and work live in it
    const char *const *fuse_argv; // non-NULL: served by fuse-overlayfs (mounting on `source`)
    const char *fuse_seen;     // where that mount is seen from the child (fuse_hostroot + source)
    // RB_MOUNT_FILE:
    int content_fd;
    uint32_t uid, gid, mode;
};

struct rb_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

enum rb_probe {
    RB_PROBE_NONE = 0,
    RB_PROBE_USERNS,           // reaching the point after the id maps are written
    RB_PROBE_OVERLAY,          // mount an overlay with userxattr (the plan's one mount step)
    RB_PROBE_BINFMT,           // mount a private binfmt_misc instance (the plan's one mount step)
    // Not probes but the same shape (a user namespace with the sandbox's id map, then one job):
    RB_TASK_OWNERS,            // apply the ownership records read from `task_fd` under `task_root`
    RB_TASK_RECLAIM,           // give everything under `task_root` back to 0:0 (the invoking user)
    RB_TASK_EXEC,              // execve `argv` with `envp` in the new user namespace, every fd kept
                               // (rbuild re-executing itself there: see UserNamespace.swift)
    RB_PROBE_PROC,             // mount a procfs (the plan's one mount step; with CLONE_NEWPID)
};

/// One ownership record of RB_TASK_OWNERS, followed by `path_len` bytes of a path relative to
/// the root (no NUL). The entry is opened with RESOLVE_IN_ROOT and never followed if a symlink;
/// `mode` (permission bits, with set-id bits that chown clears) is restored unless it is a symlink.
struct rb_owner_record {
    uint32_t uid, gid, mode;
    uint32_t path_len;
};

struct rb_plan {
    const char *rootfs;                // absolute host path
    const char *const *argv;           // NULL-terminated
    const char *const *envp;           // NULL-terminated
    const char *path_search;           // PATH used to find argv[0] when it has no '/'
    const char *workdir;               // absolute path inside the root
    const char *hostname;              // NULL: keep
    uint32_t uid, gid;                 // identity inside the user namespace
    const uint32_t *groups;            // supplementary groups
    size_t ngroups;
    int set_groups;                    // 0 in single-id mode: setgroups is denied there
    int new_netns;                     // bring up lo in the new net namespace
    int readonly_root;
    struct rb_mount *mounts;
    size_t nmounts;
    const struct rb_rlimit *rlimits;
    size_t nrlimits;
    uint64_t capabilities;             // bit n = capability n kept in bounding/permitted/effective
    int last_cap;                      // highest capability the kernel knows
    const void *bpf;                   // struct sock_filter[]; NULL: no seccomp
    unsigned short bpf_len;            // number of instructions
    int probe;                         // enum rb_probe; RB_PROBE_NONE runs argv (probes mount `mounts` only)
    unsigned long clone_flags;         // CLONE_NEW* set chosen by the parent
    int stdio[3];                      // fds to become the command's 0, 1, 2; -1 keeps ours
    int fake_ids;                      // 1: load the filter with a listener (its SCMP_ACT_NOTIFY
                                       // rules) and send it to the parent (rb_child.notify_fd)
    int console;                       // 1: the command's 0-2 are a pseudo-terminal from the
                                       // sandbox's devpts (its controlling terminal), whose
                                       // master goes to the parent (rb_child.console_fd); `stdio` unused
    // With overlay_lowers set, the root is a kernel overlayfs mounted (in the sandbox's user
    // namespace, with userxattr) on `rootfs`, which is then only an empty mount point.
    const char *const *overlay_lowers; // NULL-terminated, topmost first
    const char *overlay_upper;         // NULL: a read-only overlay of the lowers
    const char *overlay_work;
    int overlay_lowerdir_plus;         // 1: one "lowerdir+" per layer (Linux 6.8+), else one joined "lowerdir"
    const char *overlay_lowerdir;      // the joined, escaped form for older kernels
    const char *overlay_tmpfs;         // non-NULL: mount a tmpfs here first (upper and work live in
                                       // it and vanish with the sandbox: a throw-away root)
    const char *const *overlay_skeleton; // NULL or NULL-terminated paths made in the tmpfs upper
                                       // before the overlay is mounted: "a/b/" a directory, "a/f"
                                       // an empty file (mount points a read-only lower lacks)
    // With fuse_argv set, the root is a fuse-overlayfs mount instead. The program is started
    // in the sandbox's namespaces (so it dies with the sandbox's pid namespace), chrooted into
    // a recursive bind of the host root on `fuse_hostroot`: pivot_root moves only processes
    // whose root is the old root, so the daemon keeps a root of its own and never looks paths
    // up through the filesystem it serves. Its argv names `rootfs` as the mount point, which
    // seen from here is `fuse_rootfs` (fuse_hostroot + rootfs).
    const char *const *fuse_argv;
    const char *fuse_hostroot;
    const char *fuse_rootfs;
    // The chroot isolation (no namespaces at all, for rbuild as root where none can be made):
    // no mounts, no pivot_root; the child chroots into `rootfs`, which the parent prepared.
    int chroot_root;
    const char *task_root;             // RB_TASK_*: the directory the task works in
    int task_fd;                       // RB_TASK_OWNERS: records (struct rb_owner_record + path)
};

/// What the child writes to the status pipe on failure (fixed size, one write).
struct rb_report {
    int32_t stage;
    int32_t err;
    int32_t item;
    int32_t reserved;
};

/// The parent-side results of rb_spawn.
struct rb_child {
    pid_t pid;                 // the sandbox's init (pid 1 inside)
    int sync_fd;               // rb_release() one byte once the id maps are in place (the init then
                               // prepares the root), a second once its network is up (it then starts
                               // the command); then close
    int status_fd;             // read rb_report records until EOF (EOF with none: exec succeeded)
    int notify_fd;             // with plan->fake_ids: rb_recv_fd() gives the seccomp listener; else -1
    int console_fd;            // with plan->console: rb_recv_fd() gives the terminal's master (EOF
                               // if the sandbox failed before making it); else -1
};

/// One seccomp user notification (struct seccomp_notif, flattened for Swift).
struct rb_notif {
    uint64_t id;
    uint32_t pid;              // the calling thread, in our pid namespace
    uint32_t arch;             // AUDIT_ARCH_*
    int32_t nr;
    uint64_t args[6];
};

/// SCM_RIGHTS over a socket. rb_send_fd is async-signal-safe. Return 0 / the fd, or -errno.
int rb_send_fd(int sock, int fd);
int rb_recv_fd(int sock);
/// Waits until the listener has a notification (1), or `stop_fd` is readable or no task uses
/// the filter any more (0); -errno on error.
int rb_notif_wait(int listener, int stop_fd);
int rb_notif_recv(int listener, struct rb_notif *out);
/// Answers notification `id`: the call returns `val`, or fails with `err` (a positive errno).
int rb_notif_respond(int listener, uint64_t id, int64_t val, int32_t err);
/// process_vm_readv/writev of exactly `len` bytes. 0 or -errno.
long rb_mem_read(pid_t pid, uint64_t addr, void *buf, size_t len);
long rb_mem_write(pid_t pid, uint64_t addr, const void *buf, size_t len);

/// Clones the sandbox init with `plan->clone_flags`. All signals are blocked across the
/// clone so that the child starts with no handler able to run. Returns 0, or -errno.
int rb_spawn(struct rb_plan *plan, struct rb_child *out);

/// Sends `count` go-ahead bytes (1 or 2) on rb_child.sync_fd. A sandbox that already failed
/// gives -EPIPE, never SIGPIPE. Returns 0, or -errno.
int rb_release(int sync_fd, int count);

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH that were sent to
/// this process with kill() to `pid`. Signals from the terminal are not forwarded: the sandbox
/// is in the same foreground process group and got them already. pid <= 0 restores defaults.
void rb_forward_signals(pid_t pid);

/// waitpid() retrying on EINTR. Returns the pid, or -errno.
pid_t rb_waitpid(pid_t pid, int *status);

/// Reads exactly one report, retrying on EINTR. Returns 1 when a report was read, 0 at EOF, -errno.
int rb_read_report(int fd, struct rb_report *report);

/// memfd_create(name, MFD_CLOEXEC). Returns fd or -errno.
int rb_memfd(const char *name);

/// PR_SET_DUMPABLE(0) for the calling process: no ptrace and no /proc/PID access by others of
/// its uid without CAP_SYS_PTRACE. Returns 0 or -errno.
int rb_set_undumpable(void);

/// PR_SET_PDEATHSIG(SIGKILL) for the calling process (prctl is variadic: Swift cannot call it).
int rb_die_with_parent(void);

/// Starts a long-running helper (a sandbox's network stack, a build's ssh agent) from this
/// multithreaded process: `fds[i]` (at most 8) becomes its descriptor 3+i, stdin is `stdin_fd`
/// (/dev/null when -1), stdout and stderr go to `log_fd` (/dev/null when -1), every other
/// descriptor is closed on exec, and it runs in a process group of its own. With
/// `die_with_parent` it gets SIGKILL when the calling thread ends (PR_SET_PDEATHSIG), so that even
/// `kill -9` of rbuild stops it; only for a thread that outlives the helper. Returns the pid once
/// the exec happened, or -errno (also the exec's own failure).
pid_t rb_spawn_helper(const char *path, const char *const *argv, const char *const *envp,
                      const int *fds, int nfds, int stdin_fd, int log_fd, int die_with_parent);

/// pidfd_open(2): an fd that polls readable once `pid` exited. Returns the fd or -errno.
int rb_pidfd_open(pid_t pid);

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so that no child another
/// thread spawns meanwhile inherits them (pipe2 is _GNU_SOURCE only). Returns 0 or -errno.
int rb_pipe_cloexec(int fds[2]);

/// Small wrappers around macros, for Swift.
int rb_wifexited(int status);
int rb_wexitstatus(int status);
int rb_wifsignaled(int status);
int rb_wtermsig(int status);

/// Sandboxes to kill on SIGINT/SIGTERM once rb_install_interrupt_handler ran (builds).
void rb_track_sandbox(pid_t pid, int add);
void rb_install_interrupt_handler(void);
/// The signal that interrupted the build, or 0.
int rb_interrupted(void);

#ifdef __cplusplus
}
#endif
