// The libcap functions rbuild calls (capability names to numbers and back), loaded on first use:
// see internal.h.
#include "internal.h"

#include <sys/capability.h>

RB_LAZY_LIBRARY(libcap, "libcap.so.2", "libcap2");

RB_LAZY(libcap, int, cap_free, (void *a0), (a0))
RB_LAZY(libcap, int, cap_from_name, (const char *a0, cap_value_t *a1), (a0, a1))
RB_LAZY(libcap, char *, cap_to_name, (cap_value_t a0), (a0))
