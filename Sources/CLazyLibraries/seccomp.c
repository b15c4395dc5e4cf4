// The libseccomp functions rbuild calls (compiling a filter, and the version and API level that
// key its cache), loaded on first use: see internal.h. Processes that start no sandbox (and
// `--version`) never load it.
#include "internal.h"

#include <seccomp.h>

RB_LAZY_LIBRARY(libseccomp, "libseccomp.so.2", "libseccomp2");

RB_LAZY(libseccomp, unsigned int, seccomp_api_get, (void), ())
RB_LAZY(libseccomp, const struct scmp_version *, seccomp_version, (void), ())
RB_LAZY(libseccomp, uint32_t, seccomp_arch_native, (void), ())
RB_LAZY(libseccomp, uint32_t, seccomp_arch_resolve_name, (const char *a0), (a0))
RB_LAZY(libseccomp, int, seccomp_arch_add, (scmp_filter_ctx a0, uint32_t a1), (a0, a1))
RB_LAZY(libseccomp, int, seccomp_arch_remove, (scmp_filter_ctx a0, uint32_t a1), (a0, a1))
RB_LAZY(libseccomp, int, seccomp_attr_set, (scmp_filter_ctx a0, enum scmp_filter_attr a1, uint32_t a2), (a0, a1, a2))
RB_LAZY(libseccomp, int, seccomp_export_bpf, (const scmp_filter_ctx a0, int a1), (a0, a1))
RB_LAZY(libseccomp, scmp_filter_ctx, seccomp_init, (uint32_t a0), (a0))
RB_LAZY_VOID(libseccomp, seccomp_release, (scmp_filter_ctx a0), (a0))
RB_LAZY(libseccomp, int, seccomp_rule_add_array,
        (scmp_filter_ctx a0, uint32_t a1, int a2, unsigned int a3, const struct scmp_arg_cmp *a4), (a0, a1, a2, a3, a4))
RB_LAZY(libseccomp, int, seccomp_syscall_resolve_name, (const char *a0), (a0))
RB_LAZY(libseccomp, int, seccomp_syscall_resolve_name_arch, (uint32_t a0, const char *a1), (a0, a1))   // tests
RB_LAZY(libseccomp, char *, seccomp_syscall_resolve_num_arch, (uint32_t a0, int a1), (a0, a1))
