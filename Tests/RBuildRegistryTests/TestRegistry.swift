import Foundation
import RBuildOCI
#if canImport(Glibc)
import Glibc
#endif

/// A registry in the test process, serving whatever it is told to — which a real one would not:
/// GET answers from a table of paths, each connection on a thread of its own, on 127.0.0.1 and
/// a port the kernel picks (plain HTTP, as rbuild talks to 127.0.0.1).
final class TestRegistry: @unchecked Sendable {
    struct Answer {
        var status = 200
        var contentType: String?
        var body: [UInt8] = []
        /// `body`, then spaces without end (up to 64 MiB, so that a reader that reads all still
        /// finishes).
        var endless = false
    }

    let listener: Int32
    let port: Int
    private let lock = NSLock()
    private var routes: [String: Answer]
    private var log: [String] = []
    private var endlessSent = 0

    var host: String { "127.0.0.1:\(port)" }
    /// The paths asked for, in order.
    var requests: [String] { lock.withLock { log } }
    /// How many bytes of an endless answer went out before the reader stopped.
    var sentEndless: Int { lock.withLock { endlessSent } }

    init(_ routes: [String: Answer] = [:]) throws {
        self.routes = routes
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
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        // Until deinit shuts the listener down (the thread holds no reference to the registry).
        Thread.detachNewThread { [weak self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR { continue } else { return } }
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                guard let registry = self else { close(c); return }
                Thread.detachNewThread { registry.serve(c) }
            }
        }
    }

    deinit {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    subscript(path: String) -> Answer? {
        get { lock.withLock { routes[path] } }
        set { lock.withLock { routes[path] = newValue } }
    }

    /// Serves `bytes` as a manifest or index at `/v2/REPO/manifests/REF` (and by digest).
    @discardableResult
    func document(_ repo: String, _ ref: String?, _ bytes: [UInt8], contentType: String) -> Descriptor {
        let d = Digest.of(bytes)
        let answer = Answer(contentType: contentType, body: bytes)
        self["/v2/\(repo)/manifests/\(d)"] = answer
        if let ref { self["/v2/\(repo)/manifests/\(ref)"] = answer }
        return Descriptor(mediaType: contentType, digest: d, size: Int64(bytes.count))
    }

    /// Serves `bytes` as a blob of `repo`.
    @discardableResult
    func blob(_ repo: String, _ bytes: [UInt8], _ mediaType: String) -> Descriptor {
        let d = Digest.of(bytes)
        self["/v2/\(repo)/blobs/\(d)"] = Answer(contentType: "application/octet-stream", body: bytes)
        return Descriptor(mediaType: mediaType, digest: d, size: Int64(bytes.count))
    }

    private func send(_ c: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(c, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
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
        let line = String(decoding: request, as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = line.split(separator: " ")
        guard parts.count >= 2 else { return }
        let path = String(parts[1].split(separator: "?").first ?? "")
        lock.withLock { log.append(path) }
        let answer = path == "/v2/" ? Answer(contentType: "application/json", body: Array("{}".utf8)) : self[path]
        guard let answer else {
            _ = send(c, Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            return
        }
        var head = "HTTP/1.1 \(answer.status) X\r\nConnection: close\r\n"
        if let t = answer.contentType { head += "Content-Type: \(t)\r\n" }
        if !answer.endless { head += "Content-Length: \(answer.body.count)\r\n" }
        guard send(c, Array((head + "\r\n").utf8)) else { return }
        guard answer.endless else {
            _ = send(c, answer.body)
            return
        }
        guard send(c, answer.body) else { return }
        let chunk = [UInt8](repeating: 0x20, count: 64 << 10)
        var sent = answer.body.count
        while sent < 64 << 20, send(c, chunk) {
            sent += chunk.count
            lock.withLock { endlessSent = sent }
        }
    }
}
