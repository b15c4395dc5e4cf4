// libarchive's functions that rbuild calls (layers, image archives), loaded on first use: see
// internal.h. One line per function; the header's prototypes check each.
#include "internal.h"

#include <archive.h>
#include <archive_entry.h>

// libarchive 3 has had the soname libarchive.so.13 since 3.0.
#if ARCHIVE_VERSION_NUMBER < 3000000 || ARCHIVE_VERSION_NUMBER >= 4000000
#error "libarchive 3 expected (libarchive.so.13)"
#endif

RB_LAZY_LIBRARY(libarchive, "libarchive.so.13", "libarchive13");

RB_LAZY(libarchive, struct archive_entry *, archive_entry_clone, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, mode_t, archive_entry_filetype, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_free, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, la_int64_t, archive_entry_gid, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, const char *, archive_entry_hardlink, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, time_t, archive_entry_mtime, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, long, archive_entry_mtime_nsec, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, struct archive_entry *, archive_entry_new, (void), ())
RB_LAZY(libarchive, const char *, archive_entry_pathname, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, mode_t, archive_entry_perm, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_set_filetype, (struct archive_entry* a0, unsigned int a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_gid, (struct archive_entry* a0, la_int64_t a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_gname, (struct archive_entry* a0, const char* a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_hardlink, (struct archive_entry* a0, const char* a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_mtime, (struct archive_entry* a0, time_t a1, long a2), (a0, a1, a2))
RB_LAZY_VOID(libarchive, archive_entry_set_pathname, (struct archive_entry* a0, const char* a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_perm, (struct archive_entry* a0, mode_t a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_rdev, (struct archive_entry* a0, dev_t a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_size, (struct archive_entry* a0, la_int64_t a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_symlink, (struct archive_entry* a0, const char* a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_uid, (struct archive_entry* a0, la_int64_t a1), (a0, a1))
RB_LAZY_VOID(libarchive, archive_entry_set_uname, (struct archive_entry* a0, const char* a1), (a0, a1))
RB_LAZY(libarchive, la_int64_t, archive_entry_size, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, const char *, archive_entry_symlink, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, la_int64_t, archive_entry_uid, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_unset_atime, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_unset_birthtime, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_unset_ctime, (struct archive_entry* a0), (a0))
RB_LAZY_VOID(libarchive, archive_entry_xattr_add_entry, (struct archive_entry* a0, const char* a1, const void* a2, size_t a3), (a0, a1, a2, a3))
RB_LAZY(libarchive, int, archive_entry_xattr_next, (struct archive_entry* a0, const char** a1, const void** a2, size_t* a3), (a0, a1, a2, a3))
RB_LAZY(libarchive, int, archive_entry_xattr_reset, (struct archive_entry* a0), (a0))
RB_LAZY(libarchive, const char *, archive_error_string, (struct archive* a0), (a0))
RB_LAZY(libarchive, la_ssize_t, archive_read_data, (struct archive* a0, void* a1, size_t a2), (a0, a1, a2))
RB_LAZY(libarchive, int, archive_read_data_block, (struct archive* a0, const void** a1, size_t* a2, la_int64_t* a3), (a0, a1, a2, a3))
RB_LAZY(libarchive, int, archive_read_free, (struct archive* a0), (a0))
RB_LAZY(libarchive, struct archive *, archive_read_new, (void), ())
RB_LAZY(libarchive, int, archive_read_next_header, (struct archive* a0, struct archive_entry** a1), (a0, a1))
RB_LAZY(libarchive, int, archive_read_open, (struct archive* a0, void* a1, archive_open_callback* a2, archive_read_callback* a3, archive_close_callback* a4), (a0, a1, a2, a3, a4))
RB_LAZY(libarchive, int, archive_read_support_filter_bzip2, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_read_support_filter_gzip, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_read_support_filter_none, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_read_support_filter_xz, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_read_support_filter_zstd, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_read_support_format_tar, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_write_close, (struct archive* a0), (a0))
RB_LAZY(libarchive, la_ssize_t, archive_write_data, (struct archive* a0, const void* a1, size_t a2), (a0, a1, a2))
RB_LAZY(libarchive, int, archive_write_free, (struct archive* a0), (a0))
RB_LAZY(libarchive, int, archive_write_header, (struct archive* a0, struct archive_entry* a1), (a0, a1))
RB_LAZY(libarchive, struct archive *, archive_write_new, (void), ())
RB_LAZY(libarchive, int, archive_write_open2, (struct archive* a0, void* a1, archive_open_callback* a2, archive_write_callback* a3, archive_close_callback* a4, archive_free_callback* a5), (a0, a1, a2, a3, a4, a5))
RB_LAZY(libarchive, int, archive_write_set_bytes_in_last_block, (struct archive* a0, int a1), (a0, a1))
RB_LAZY(libarchive, int, archive_write_set_bytes_per_block, (struct archive* a0, int a1), (a0, a1))
RB_LAZY(libarchive, int, archive_write_set_format_pax_restricted, (struct archive* a0), (a0))
