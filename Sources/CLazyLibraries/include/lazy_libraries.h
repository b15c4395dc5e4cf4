#ifndef RBUILD_LAZY_LIBRARIES_H
#define RBUILD_LAZY_LIBRARIES_H

// libarchive, libcrypto and libsqlite3, loaded when rbuild first calls into them rather than when
// it starts. The functions rbuild uses are defined here under their own names (declared by the
// libraries' headers, which CArchive, CCrypto and CSQLite import), each forwarding to the real one.
// A function used from Swift that is not listed in archive.c, crypto.c or sqlite.c fails the link
// with an undefined reference: add one line for it there.

#endif
