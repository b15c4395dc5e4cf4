#ifndef RBUILD_LAZY_LIBRARIES_H
#define RBUILD_LAZY_LIBRARIES_H

// libarchive, libcrypto, libsqlite3, libseccomp, libcap, zlib and libzstd, loaded when rbuild
// first calls into them rather than when it starts. The functions rbuild uses are defined here
// under their own names (declared by the libraries' headers, which CArchive, CCrypto, CSQLite,
// CSeccomp, CCap, CZlib and CZstd import), each forwarding to the real one. A function used from
// Swift that is not listed in this target's .c file for its library fails the link with an
// undefined reference: add one line for it there.

#endif
