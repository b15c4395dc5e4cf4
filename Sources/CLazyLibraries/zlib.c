// The zlib functions rbuild calls (gzip layers and exports), loaded on first use: see internal.h.
#include "internal.h"

#include <zlib.h>

RB_LAZY_LIBRARY(libz, "libz.so.1", "zlib1g");

RB_LAZY(libz, int, deflateInit2_,
        (z_streamp a0, int a1, int a2, int a3, int a4, int a5, const char *a6, int a7), (a0, a1, a2, a3, a4, a5, a6, a7))
RB_LAZY(libz, int, deflate, (z_streamp a0, int a1), (a0, a1))
RB_LAZY(libz, uLong, deflateBound, (z_streamp a0, uLong a1), (a0, a1))
RB_LAZY(libz, int, deflateEnd, (z_streamp a0), (a0))
RB_LAZY(libz, int, inflateInit2_, (z_streamp a0, int a1, const char *a2, int a3), (a0, a1, a2, a3))
RB_LAZY(libz, int, inflate, (z_streamp a0, int a1), (a0, a1))
RB_LAZY(libz, int, inflateReset, (z_streamp a0), (a0))
RB_LAZY(libz, int, inflateEnd, (z_streamp a0), (a0))
