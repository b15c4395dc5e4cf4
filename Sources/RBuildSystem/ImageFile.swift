#if canImport(Glibc)
import Glibc
#endif

// The files the builder itself reads from an image (/etc/passwd and /etc/group, for USER,
// `--chown`, WORKDIR and cache-mount owners) are the image author's to choose: a FIFO there would block
// an open(2) for ever, a device would call its driver, a symlink could point anywhere, a sparse
// file could claim 10 GiB. They are all read here, one way: looked up inside the root, opened
// without reading first, and only a regular file of a bounded size is read.

/// The most the builder reads of a file it takes from an image for itself: 16 MiB holds a
/// passwd file of some 200,000 users.
public let imageFileSizeLimit = 16 << 20

/// A file of an image that the builder refused to read, and why.
public struct ImageFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        case fifo
        case characterDevice
        case blockDevice
        case socket
        case directory
        /// A symlink where none may be followed (the path was resolved in the image already).
        case symlink
        /// `size` bytes, more than the `limit` read of such a file.
        case tooLarge(size: Int64, limit: Int)
        /// Opening or reading it failed with this errno.
        case unreadable(errno: Int32)
    }

    /// The file's path inside the image.
    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        let kind: String
        switch problem {
        case .fifo: kind = "a FIFO (named pipe)"
        case .characterDevice: kind = "a character device"
        case .blockDevice: kind = "a block device"
        case .socket: kind = "a socket"
        case .directory: kind = "a directory"
        case .symlink: kind = "a symbolic link"
        case .tooLarge(let size, let limit):
            let most = limit >= 1 << 20 && limit % (1 << 20) == 0 ? "\(limit >> 20) MiB" : "\(limit) bytes"
            return "the image's \(path) is \(size) bytes, more than the \(most) rbuild reads of it"
        case .unreadable(let code):
            return "cannot read the image's \(path): \(errnoText(code))"
        }
        return "the image's \(path) is \(kind), not a regular file: rbuild reads only regular files there"
    }
}

/// Reads a file of an image's root for the builder's own use. `path` is looked up with openat2
/// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS from `rootfd`, so `..` and symlinks (even absolute
/// ones) resolve inside the root, as the container sees them, and never reach a host file. The
/// file is opened O_PATH first, which reads nothing — a FIFO cannot block, a device's driver is
/// not called — and only a regular file of at most `limit` bytes is then reopened (through
/// /proc/self/fd: the same inode, O_NONBLOCK) and read. Anything else is an `ImageFileError`.
///
/// - followLast: false when `path` names an entry whose symlinks were resolved already (a
///   snapshot view's): a symlink there is refused rather than followed.
/// - name: the file's path in the image for errors, when `path` is relative to a layer.
/// - Returns: the bytes, or nil when there is no such file.
public func readFileInRoot(_ rootfd: Int32, _ path: String, limit: Int = imageFileSizeLimit,
                           followLast: Bool = true, name: String? = nil) throws -> [UInt8]? {
    func refuse(_ problem: ImageFileError.Problem) -> ImageFileError { ImageFileError(path: name ?? path, problem: problem) }
    let pfd = openInRoot(rootfd, path, flags: O_PATH_FLAG | O_CLOEXEC | (followLast ? 0 : O_NOFOLLOW))
    if pfd == -ENOENT || pfd == -ENOTDIR { return nil }
    guard pfd >= 0 else { throw refuse(.unreadable(errno: -pfd)) }
    let located = FileDescriptor(owning: pfd)
    var st = stat()
    guard fstat(pfd, &st) == 0 else { throw refuse(.unreadable(errno: errno)) }
    switch st.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFIFO: throw refuse(.fifo)
    case S_IFCHR: throw refuse(.characterDevice)
    case S_IFBLK: throw refuse(.blockDevice)
    case S_IFSOCK: throw refuse(.socket)
    case S_IFDIR: throw refuse(.directory)
    case S_IFLNK: throw refuse(.symlink)
    default: throw refuse(.unreadable(errno: EINVAL))
    }
    guard st.st_size <= limit else { throw refuse(.tooLarge(size: Int64(st.st_size), limit: limit)) }
    let fd = retryingOnInterrupt { open("/proc/self/fd/\(pfd)", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) }
    guard fd >= 0 else { throw refuse(.unreadable(errno: errno)) }
    let file = FileDescriptor(owning: fd)
    located.close()
    let bytes: [UInt8]
    do {
        bytes = try file.readAll(limit: limit + 1)
    } catch let e as SystemError {
        throw refuse(.unreadable(errno: e.errno))
    }
    // It grew since fstat.
    guard bytes.count <= limit else { throw refuse(.tooLarge(size: Int64(bytes.count), limit: limit)) }
    return bytes
}

/// `readFileInRoot` from the directory `root` (which must exist: a SystemError says why not).
public func readFileInRoot(root: String, path: String, limit: Int = imageFileSizeLimit) throws -> [UInt8]? {
    let rootfd = FileDescriptor(owning: open(root, O_PATH_FLAG | O_DIRECTORY | O_CLOEXEC))
    guard rootfd.rawValue >= 0 else { throw SystemError("open", path: root) }
    return try readFileInRoot(rootfd.rawValue, path, limit: limit)
}
