// SHA-256 through OpenSSL's low-level interface (SHA256_Init/Update/Final). OpenSSL 3 marks it
// deprecated in favour of EVP, but still exports and supports it, with the same assembly (SHA-NI
// where the CPU has it). EVP's first use fetches a provider and reads openssl.cnf: about 6 ms and
// 2 MiB of RSS in every process that hashes anything, for no speed gained.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
