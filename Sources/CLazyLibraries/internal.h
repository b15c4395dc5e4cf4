#ifndef RBUILD_LAZY_INTERNAL_H
#define RBUILD_LAZY_INTERNAL_H

// Why lazily: Debian's libarchive brings libxml2 and ICU (nine libraries), libcrypto and
// libsqlite3 are large, and loading and relocating them cost every rbuild process about 6 ms
// and 3 MiB of its RSS, though most processes (`--version`, `run --rootfs`, `info`) call none.
// libseccomp, libcap, zlib and libzstd are small, but loading the four still took 0.4-0.7 ms of
// a start-up of about 5 (measured with a C program linked with and without them); a process
// that starts no sandbox and moves no compressed layer calls none of them.
//
// A library that cannot be loaded ends the process as the dynamic loader would have at start
// (a message on stderr, exit status 127): nothing can go on without it.

#include <dlfcn.h>
#include <pthread.h>

struct rb_lazy_library {
    const char *soname;
    const char *package;   // what to install when it is missing
    void *handle;          // set once, under a lock
};

#define RB_LAZY_LIBRARY(var, so, pkg) \
    static struct rb_lazy_library var = { .soname = so, .package = pkg, .handle = 0 }

// The address of `name` in `lib`, loading it on first use; never returns NULL.
void *rb_lazy_symbol(struct rb_lazy_library *lib, const char *name);

// Defines `ret name params` to call `name` in `lib` with `args`. The looked-up pointer is cached
// per function (a race only looks it up twice).
#define RB_LAZY(lib, ret, name, params, args) \
    __attribute__((visibility("hidden"))) ret name params { \
        static ret (*fn) params; \
        ret (*f) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE); \
        if (!f) { \
            f = (ret (*) params) rb_lazy_symbol(&lib, #name); \
            __atomic_store_n(&fn, f, __ATOMIC_RELEASE); \
        } \
        return f args; \
    }

#define RB_LAZY_VOID(lib, name, params, args) \
    __attribute__((visibility("hidden"))) void name params { \
        static void (*fn) params; \
        void (*f) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE); \
        if (!f) { \
            f = (void (*) params) rb_lazy_symbol(&lib, #name); \
            __atomic_store_n(&fn, f, __ATOMIC_RELEASE); \
        } \
        f args; \
    }

#endif
