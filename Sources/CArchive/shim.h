#include <archive.h>
#include <archive_entry.h>
// Extended attributes travel with tar entries.
#include <sys/xattr.h>
