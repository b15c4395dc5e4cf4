// The system calls the Swift side of rbuild needs but cannot call itself: variadic ones
// (syscall(2), ioctl(2)) and those glibc declares only under _GNU_SOURCE. One wrapper per call,
// each returning -errno on failure so that no thread-local errno has to survive a Swift call.
// Used by RBuildSystem (and by the sandbox child, for openat2: it is async-signal-safe).
#pragma once

#include <stddef.h>
// getxattr(2) and friends, which the Glibc module does not cover.
#include <sys/xattr.h>

#ifdef __cplusplus
extern "C" {
#endif

/// O_PATH, which Swift cannot import from the glibc macros (the kernel ABI value).
enum { RB_O_PATH = 010000000 };

/// openat2(dirfd, path, {flags, mode, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS}): opens `path`
/// as if `dirfd` were "/", so neither ".." nor a symlink can leave it. Retries on EINTR.
/// Returns fd or -errno.
int rb_open_in_root(int dirfd, const char *path, int flags, int mode);

/// copy_file_range(in, NULL, out, NULL, len, 0). Returns bytes copied, or -errno.
long rb_copy_file_range(int in, int out, size_t len);

/// ioctl(out, FICLONE, in): share `in`'s blocks (reflink). Returns 0, or -errno.
int rb_ficlone(int out, int in);

/// The filesystem type (statfs's f_type, e.g. 0x794c7630 for overlayfs) of `path`, or -errno.
long long rb_fs_type(const char *path);

/// Clones a child into a new user namespace, which exits at once. Returns 0 when that worked,
/// or -errno (EPERM: a seccomp profile or policy forbids it; ENOSPC: max_user_namespaces).
int rb_userns_probe(void);

#ifdef __cplusplus
}
#endif
