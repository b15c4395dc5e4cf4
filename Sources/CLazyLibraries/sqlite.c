// The SQLite functions rbuild calls (the cache index, build records), loaded on first use: see
// internal.h.
#include "internal.h"

#include <sqlite3.h>

RB_LAZY_LIBRARY(libsqlite3, "libsqlite3.so.0", "libsqlite3-0");

RB_LAZY(libsqlite3, int, sqlite3_bind_blob, (sqlite3_stmt* a0, int a1, const void* a2, int a3, void(*a4)(void*)), (a0, a1, a2, a3, a4))
RB_LAZY(libsqlite3, int, sqlite3_bind_int64, (sqlite3_stmt* a0, int a1, sqlite3_int64 a2), (a0, a1, a2))
RB_LAZY(libsqlite3, int, sqlite3_bind_null, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, int, sqlite3_bind_text, (sqlite3_stmt* a0, int a1, const char* a2, int a3, void(*a4)(void*)), (a0, a1, a2, a3, a4))
RB_LAZY(libsqlite3, int, sqlite3_busy_timeout, (sqlite3* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, int, sqlite3_close, (sqlite3* a0), (a0))
RB_LAZY(libsqlite3, const void *, sqlite3_column_blob, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, int, sqlite3_column_bytes, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, sqlite3_int64, sqlite3_column_int64, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, const unsigned char *, sqlite3_column_text, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, int, sqlite3_column_type, (sqlite3_stmt* a0, int a1), (a0, a1))
RB_LAZY(libsqlite3, const char *, sqlite3_errmsg, (sqlite3* a0), (a0))
RB_LAZY(libsqlite3, int, sqlite3_exec, (sqlite3* a0, const char* a1, int (*a2)(void*,int,char**,char**), void* a3, char** a4), (a0, a1, a2, a3, a4))
RB_LAZY(libsqlite3, int, sqlite3_finalize, (sqlite3_stmt* a0), (a0))
RB_LAZY_VOID(libsqlite3, sqlite3_free, (void* a0), (a0))
RB_LAZY(libsqlite3, int, sqlite3_open, (const char* a0, sqlite3** a1), (a0, a1))
RB_LAZY(libsqlite3, int, sqlite3_open_v2, (const char* a0, sqlite3** a1, int a2, const char* a3), (a0, a1, a2, a3))
RB_LAZY(libsqlite3, int, sqlite3_prepare_v2, (sqlite3* a0, const char* a1, int a2, sqlite3_stmt** a3, const char** a4), (a0, a1, a2, a3, a4))
RB_LAZY(libsqlite3, int, sqlite3_reset, (sqlite3_stmt* a0), (a0))
RB_LAZY(libsqlite3, int, sqlite3_step, (sqlite3_stmt* a0), (a0))
