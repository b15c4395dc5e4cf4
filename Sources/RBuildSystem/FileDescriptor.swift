#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor that this object owns: closed once, when the object goes (or by
/// `close()`). For descriptors that outlive one scope; a `defer { close(fd) }` is as good
/// inside one.
public final class FileDescriptor {
    public private(set) var rawValue: Int32

    /// Takes over `fd` (which must be open).
    public init(owning fd: Int32) { rawValue = fd }

    /// open(2), retried on EINTR, with O_CLOEXEC added.
    public convenience init(path: String, flags: Int32, mode: mode_t = 0) throws {
        let fd = retryingOnInterrupt { open(path, flags | O_CLOEXEC, mode) }
        guard fd >= 0 else { throw SystemError("open", path: path) }
        self.init(owning: fd)
    }

    /// openat(2) relative to `directory`, retried on EINTR, with O_CLOEXEC added. `path` names
    /// the entry in the error when it fails.
    public convenience init(at directory: Int32, _ name: String, flags: Int32, mode: mode_t = 0, path: String? = nil) throws {
        let fd = retryingOnInterrupt { openat(directory, name, flags | O_CLOEXEC, mode) }
        guard fd >= 0 else { throw SystemError("openat", path: path ?? name) }
        self.init(owning: fd)
    }

    deinit { close() }

    /// Closes now; later calls do nothing.
    public func close() {
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
        rawValue = -1
    }

    /// Every byte until end of file, or the first `limit` or more.
    public func readAll(limit: Int = .max) throws -> [UInt8] {
        try RBuildSystem.readAll(rawValue, limit: limit)
    }

    /// Writes all of `bytes`.
    public func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try RBuildSystem.writeAll(rawValue, $0) }
    }
}

/// Reads `fd` to end of file (stopping once at least `limit` bytes are in), retrying on EINTR.
public func readAll(_ fd: Int32, limit: Int = .max, path: String? = nil) throws -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while out.count < limit {
        let n = buf.withUnsafeMutableBytes { b in retryingOnInterrupt { read(fd, b.baseAddress, b.count) } }
        guard n >= 0 else { throw SystemError("read", path: path) }
        if n == 0 { break }
        out += buf[0..<n]
    }
    return out
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and after short writes.
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String? = nil) throws {
    var off = 0
    while off < bytes.count {
        let n = retryingOnInterrupt { write(fd, bytes.baseAddress! + off, bytes.count - off) }
        guard n >= 0 else { throw SystemError("write", path: path) }
        off += n
    }
}

public func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String? = nil) throws {
    try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
}
