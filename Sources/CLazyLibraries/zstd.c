// The libzstd functions rbuild calls (zstd layers and exports), loaded on first use: see
// internal.h.
#include "internal.h"

// zstd.h marks its functions visibility("default") unless told otherwise (ZSTDLIB_VISIBILITY, the
// name zstd 1.4 and 1.5 both read); these forwarders are hidden (internal.h).
#define ZSTDLIB_VISIBILITY __attribute__((visibility("hidden")))
#include <zstd.h>

RB_LAZY_LIBRARY(libzstd, "libzstd.so.1", "libzstd1");

RB_LAZY(libzstd, ZSTD_CCtx *, ZSTD_createCCtx, (void), ())
RB_LAZY(libzstd, size_t, ZSTD_freeCCtx, (ZSTD_CCtx *a0), (a0))
RB_LAZY(libzstd, size_t, ZSTD_CCtx_setParameter, (ZSTD_CCtx *a0, ZSTD_cParameter a1, int a2), (a0, a1, a2))
RB_LAZY(libzstd, size_t, ZSTD_compressStream2,
        (ZSTD_CCtx *a0, ZSTD_outBuffer *a1, ZSTD_inBuffer *a2, ZSTD_EndDirective a3), (a0, a1, a2, a3))
RB_LAZY(libzstd, ZSTD_DCtx *, ZSTD_createDCtx, (void), ())
RB_LAZY(libzstd, size_t, ZSTD_freeDCtx, (ZSTD_DCtx *a0), (a0))
RB_LAZY(libzstd, size_t, ZSTD_decompressStream, (ZSTD_DStream *a0, ZSTD_outBuffer *a1, ZSTD_inBuffer *a2), (a0, a1, a2))
RB_LAZY(libzstd, unsigned, ZSTD_isError, (size_t a0), (a0))
RB_LAZY(libzstd, const char *, ZSTD_getErrorName, (size_t a0), (a0))
