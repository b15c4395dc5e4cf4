// statfs(2)'s f_type, which the Glibc module does not import (sys/vfs.h).
#include "rbuild_sys.h"

#include <errno.h>
#include <sys/vfs.h>

long long rb_fs_type(const char *path) {
    struct statfs st;
    if (statfs(path, &st) < 0) return -errno;
    return (long long)(unsigned long)st.f_type;
}
