#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noreturn)) static void die(const char *what, const char *detail, const char *package) {
    char line[512];
    int n = snprintf(line, sizeof(line), "rbuild: %s: %s (install %s)\n", what, detail ? detail : "unknown error", package);
    if (n > 0) (void)!write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    _exit(127);
}

void *rb_lazy_symbol(struct rb_lazy_library *lib, const char *name) {
    pthread_mutex_lock(&load_lock);
    if (!lib->handle) {
        // RTLD_LOCAL: the library's symbols do not join the global scope, so they never stand
        // in for the definitions here (nor these, hidden, for the library's own).
        lib->handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!lib->handle) die("cannot load a shared library", dlerror(), lib->package);
    }
    pthread_mutex_unlock(&load_lock);
    void *p = dlsym(lib->handle, name);
    if (!p) die(name, dlerror(), lib->package);
    return p;
}
