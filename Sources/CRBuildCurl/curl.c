#include "rbuild_curl.h"
#include <curl/curl.h>
#include <string.h>

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
    static int initialised;
    if (!initialised) { curl_global_init(CURL_GLOBAL_DEFAULT); initialised = 1; }
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
