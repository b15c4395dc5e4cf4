// The SHA-256 functions of OpenSSL's libcrypto that rbuild calls (digests), loaded on first use:
// see internal.h.
#include "internal.h"

#include <openssl/evp.h>
#include <openssl/opensslv.h>

#if OPENSSL_VERSION_MAJOR != 3
#error "OpenSSL 3 expected (libcrypto.so.3)"
#endif

RB_LAZY_LIBRARY(libcrypto, "libcrypto.so.3", "libssl3");

RB_LAZY(libcrypto, int, EVP_DigestFinal_ex, (EVP_MD_CTX* a0, unsigned char* a1, unsigned int* a2), (a0, a1, a2))
RB_LAZY(libcrypto, int, EVP_DigestInit_ex, (EVP_MD_CTX* a0, const EVP_MD* a1, ENGINE* a2), (a0, a1, a2))
RB_LAZY(libcrypto, int, EVP_DigestUpdate, (EVP_MD_CTX* a0, const void* a1, size_t a2), (a0, a1, a2))
RB_LAZY_VOID(libcrypto, EVP_MD_CTX_free, (EVP_MD_CTX* a0), (a0))
RB_LAZY(libcrypto, EVP_MD_CTX *, EVP_MD_CTX_new, (void), ())
RB_LAZY(libcrypto, const EVP_MD *, EVP_sha256, (void), ())
