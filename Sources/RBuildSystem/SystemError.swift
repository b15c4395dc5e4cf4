#if canImport(Glibc)
import Glibc
#endif

/// A system call that failed: which call, on which path, and the errno it left. The layers above
/// wrap it in their own error (naming the layer, step or blob) or let it through as it is; its
/// description reads like `openat /state/tmp/x: Permission denied`.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The call, as the man page names it (`openat`, `unlinkat`, `mkdtemp`…).
    public var call: String
    /// The path (or what stands for it) the call was about, when there is one.
    public var path: String?
    /// The errno value.
    public var errno: Int32

    /// `errno` defaults to the thread's current value: build the error right after the call.
    public init(_ call: String, path: String? = nil, errno: Int32 = Glibc.errno) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    /// strerror(3) of `errno`, e.g. "No such file or directory".
    public var text: String { errnoText(errno) }

    public var description: String {
        path.map { "\(call) \($0): \(text)" } ?? "\(call): \(text)"
    }
}

/// The text of an errno value, e.g. "Operation not permitted".
package func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Runs a system call again while it fails with EINTR (a signal arrived before it did anything).
/// `body` returns -1 and sets errno on failure, as libc's wrappers do.
@inline(__always)
package func retryingOnInterrupt<T: FixedWidthInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r >= 0 || errno != EINTR { return r }
    }
}
