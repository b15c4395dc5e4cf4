// The SHA-256 functions of OpenSSL's libcrypto that rbuild calls (digests), loaded on first use:
// see internal.h. The low-level interface, not EVP: see CCrypto/shim.h.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "internal.h"

#include <openssl/sha.h>
#include <openssl/opensslv.h>

#if OPENSSL_VERSION_MAJOR != 3
#error "OpenSSL 3 expected (libcrypto.so.3)"
#endif

RB_LAZY_LIBRARY(libcrypto, "libcrypto.so.3", "libssl3");

RB_LAZY(libcrypto, int, SHA256_Init, (SHA256_CTX* a0), (a0))
RB_LAZY(libcrypto, int, SHA256_Update, (SHA256_CTX* a0, const void* a1, size_t a2), (a0, a1, a2))
RB_LAZY(libcrypto, int, SHA256_Final, (unsigned char* a0, SHA256_CTX* a1), (a0, a1))
