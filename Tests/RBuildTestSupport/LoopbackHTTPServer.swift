import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket on 127.0.0.1 at a port the kernel picked.
public func loopbackListener() throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard bound, listen(fd, 64) == 0 else {
        close(fd)
        throw POSIXError(.EADDRINUSE)
    }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

/// An HTTP server for tests on 127.0.0.1, a port the kernel picks: each connection on a thread of
/// its own, one request per connection (`Connection: close`). The server reads the request head
/// and logs its path (query left out); `respond` writes the whole answer through `send`, which
/// says false once the peer is gone.
public final class LoopbackHTTPServer: @unchecked Sendable {
    public struct Request: Sendable {
        public var method: String
        /// Without the query.
        public var path: String
    }
    public typealias Send = ([UInt8]) -> Bool

    public let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var log: [String] = []
    private var stopped = false
    private let respond: @Sendable (Request, Send) -> Void

    public var host: String { "127.0.0.1:\(port)" }
    /// The paths asked for, in order.
    public var requests: [String] { lock.withLock { log } }
    public func forgetRequests() { lock.withLock { log = [] } }

    public init(_ respond: @escaping @Sendable (Request, Send) -> Void) throws {
        self.respond = respond
        (listener, port) = try loopbackListener()
        let fd = listener
        // Until stop() or deinit shuts the listener down (the thread holds no reference to the server).
        Thread.detachNewThread { [weak self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR { continue } else { return } }
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                guard let server = self else { close(c); return }
                Thread.detachNewThread { server.serve(c) }
            }
        }
    }

    deinit { stop() }

    /// Stops listening: later connections are refused. Once only: closing the number again
    /// could close another thread's new file descriptor of that number.
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    /// A response head with the given status and headers, and `Connection: close`.
    public static func head(_ status: Int, _ headers: [(String, String)]) -> [UInt8] {
        Array(("HTTP/1.1 \(status) X\r\nConnection: close\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n").utf8)
    }

    private func serve(_ c: Int32) {
        defer { close(c) }
        var request: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: request, as: UTF8.self).contains("\r\n\r\n") {
            let n = read(c, &buf, buf.count)
            if n <= 0 { return }
            request += buf[0..<n]
        }
        let parts = (String(decoding: request, as: UTF8.self).split(separator: "\r\n").first ?? "").split(separator: " ")
        guard parts.count >= 2 else { return }
        let path = String(parts[1].split(separator: "?").first ?? "")
        lock.withLock { log.append(path) }
        respond(Request(method: String(parts[0]), path: path)) { bytes in
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.send(c, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return false }
                off += n
            }
            return true
        }
    }
}
