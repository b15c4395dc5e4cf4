#ifndef RBUILD_CURL_H
#define RBUILD_CURL_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Receives response bytes (body or one header line); returns how many it took (fewer stops the
/// transfer).
typedef size_t (*rb_curl_sink)(const char *data, size_t len, void *ctx);
/// Fills `buf` with up to `len` bytes of the request body; returns how many (0: the end).
typedef size_t (*rb_curl_source)(char *buf, size_t len, void *ctx);

/// One HTTP request through libcurl (RBuildRegistry's HTTP). libcurl's setopt is variadic, which
/// Swift cannot call: hence this C edge.
struct rb_curl_request {
    const char *method;
    const char *url;
    const char *const *headers;   // "Name: value", NULL-terminated
    const char *ca_file;          // PEM bundle to trust instead of the system's, or NULL
    long long body_size;          // -1: no body
    rb_curl_source source;
    rb_curl_sink body;
    rb_curl_sink header;
    void *owner;                  // the caller's own state (the callbacks get the request itself)
    void *ctx_handle;             // the libcurl handle, while the request runs
    long status;                  // the response's status, as soon as it is known
    long timeout_seconds;
    char error[256];              // filled when the transfer fails
};

/// The HTTP status, or -1 with `error` set.
long rb_curl_perform(struct rb_curl_request *r);

#ifdef __cplusplus
}
#endif
#endif
