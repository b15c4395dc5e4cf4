#if canImport(Glibc)
import Glibc
#endif
import Foundation
import RBuildSystem

/// A unix socket that passes every connection on to another one: how a build step reaches an
/// ssh agent (`RUN --mount=type=ssh`) through a socket of its own, with the owner and mode the
/// mount asks for, without the agent's socket (or the directory it sits in) being exposed.
/// Written here because it is a few lines over the socket calls: two threads per connection
/// copy bytes until either side closes.
public final class SocketForwarder: @unchecked Sendable {
    public let path: String
    let upstream: String
    private let listener: Int32
    private let stopped = DispatchSemaphore(value: 0)

    /// Listens at `path` (which must not exist) and forwards each connection to `upstream`.
    public init(listeningAt path: String, to upstream: String) throws {
        self.path = path
        self.upstream = upstream
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError(.spawnFailed, "socket: \(errnoText(errno))") }
        do {
            var addr = try Self.address(path)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard rc == 0, listen(fd, 16) == 0 else {
                throw RuntimeError(.spawnFailed, "cannot listen on \(path): \(errnoText(errno))")
            }
        } catch {
            close(fd)
            throw error
        }
        listener = fd
        let listener = fd, upstream = self.upstream, stopped = self.stopped
        Thread.detachNewThread {
            while true {
                let conn = accept(listener, nil, nil)
                if conn < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    break
                }
                _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
                Self.forward(conn, to: upstream)
            }
            stopped.signal()
        }
    }

    /// Stops accepting (connections already made run until their ends close) and removes the
    /// socket.
    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        stopped.wait()
        close(listener)
        unlink(path)
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw RuntimeError(.badMount, "socket path too long (\(bytes.count) bytes): \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        return addr
    }

    /// Connects to `upstream` and copies both ways; a side that fails or ends closes both.
    static func forward(_ conn: Int32, to upstream: String) {
        let up = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard up >= 0, var addr = try? address(upstream) else {
            close(conn)
            if up >= 0 { close(up) }
            return
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(up, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            close(conn)
            close(up)
            return
        }
        let done = DispatchGroup()
        for (from, to) in [(conn, up), (up, conn)] {
            done.enter()
            Thread.detachNewThread {
                var buf = [UInt8](repeating: 0, count: 16384)
                while true {
                    let n = read(from, &buf, buf.count)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    guard (try? writeAll(to, Array(buf[0..<n]))) != nil else { break }
                }
                shutdown(to, Int32(SHUT_WR))
                shutdown(from, Int32(SHUT_RD))
                done.leave()
            }
        }
        Thread.detachNewThread {
            done.wait()
            close(conn)
            close(up)
        }
    }
}
