#if canImport(Glibc)
import Glibc
#endif

/// Every failure of the sandbox runtime: what went wrong, on which path or step, and what to do.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case rootfsNotFound
        case badUser
        case userNotMapped
        case badMount
        case badOption
        case idMapFailed
        case spawnFailed
        case setupFailed
        case executableNotFound
        case notExecutable
        case seccomp
        case hostUnsupported
        /// A sandbox's own network cannot be set up (no helper, no /dev/net/tun, the helper failed).
        case network
    }

    public let code: Code
    /// One line: what failed, where, and what to do about it.
    public let message: String
    /// The exit status the CLI uses for it (docker's convention: 125 setup, 126 cannot run, 127 not found).
    public let exitCode: Int32
    /// The lower-level cause, for `--debug`.
    public let cause: String?

    public init(_ code: Code, _ message: String, exitCode: Int32 = 125, cause: String? = nil) {
        self.code = code
        self.message = message
        self.exitCode = exitCode
        self.cause = cause
    }

    public var description: String { message }
}
