#include "rbuild_curl.h"
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

// libcurl is loaded on the first request, not when rbuild starts: Debian's libcurl brings 26
// more shared libraries (GnuTLS, Kerberos, LDAP, libssh2, nghttp2…), whose loading, relocation
// and constructors cost every rbuild process about 8 ms, and most never talk to a registry.
static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    const char *(*easy_strerror)(CURLcode);
    void (*easy_cleanup)(CURL *);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} lib;
static char load_error[200];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load_curl(void) {
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof(load_error), "cannot load libcurl.so.4 (apt install libcurl4): %s", dlerror());
        return;
    }
#define RB_CURL_SYM(field, name) \
    if (!(*(void **)&lib.field = dlsym(h, name))) { \
        snprintf(load_error, sizeof(load_error), "libcurl.so.4 lacks %s", name); \
        return; \
    }
    RB_CURL_SYM(global_init, "curl_global_init")
    RB_CURL_SYM(easy_init, "curl_easy_init")
    RB_CURL_SYM(easy_setopt, "curl_easy_setopt")
    RB_CURL_SYM(easy_perform, "curl_easy_perform")
    RB_CURL_SYM(easy_getinfo, "curl_easy_getinfo")
    RB_CURL_SYM(easy_strerror, "curl_easy_strerror")
    RB_CURL_SYM(easy_cleanup, "curl_easy_cleanup")
    RB_CURL_SYM(slist_append, "curl_slist_append")
    RB_CURL_SYM(slist_free_all, "curl_slist_free_all")
#undef RB_CURL_SYM
    // Once, before any handle exists and from one thread (curl_global_init is not thread-safe).
    lib.global_init(CURL_GLOBAL_DEFAULT);
}

// The calls below go through `lib` (curl.h's type-checking wrappers of setopt and getinfo give way).
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_easy_init lib.easy_init
#define curl_easy_setopt lib.easy_setopt
#define curl_easy_perform lib.easy_perform
#define curl_easy_getinfo lib.easy_getinfo
#define curl_easy_strerror lib.easy_strerror
#define curl_easy_cleanup lib.easy_cleanup
#define curl_slist_append lib.slist_append
#define curl_slist_free_all lib.slist_free_all

static CURL *current_handle(struct rb_curl_request *r) { return (CURL *)r->ctx_handle; }

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    struct rb_curl_request *r = ud;
    curl_easy_getinfo(current_handle(r), CURLINFO_RESPONSE_CODE, &r->status);
    return r->body ? r->body(p, size * n, r) : size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    struct rb_curl_request *r = ud;
    return r->header ? r->header(p, size * n, r) : size * n;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud) {
    struct rb_curl_request *r = ud;
    return r->source ? r->source(p, size * n, r) : 0;
}

long rb_curl_perform(struct rb_curl_request *r) {
    pthread_once(&load_once, load_curl);
    if (load_error[0]) {
        strncpy(r->error, load_error, sizeof(r->error) - 1);
        r->error[sizeof(r->error) - 1] = 0;
        return -1;
    }
    r->error[0] = 0;
    CURL *c = curl_easy_init();
    if (!c) { strcpy(r->error, "curl_easy_init failed"); return -1; }
    r->ctx_handle = c;
    r->status = 0;
    struct curl_slist *list = NULL;
    for (const char *const *h = r->headers; h && *h; h++) list = curl_slist_append(list, *h);
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    if (r->timeout_seconds > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, r->timeout_seconds);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (r->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    int reading = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
    // Registries redirect blob downloads to their storage; libcurl does not send a custom
    // Authorization header on to another host.
    if (reading) curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (r->body_size >= 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, r);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_size);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = -1;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    } else if (!r->error[0]) {
        strncpy(r->error, curl_easy_strerror(rc), sizeof(r->error) - 1);
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    return status;
}
