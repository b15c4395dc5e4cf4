import Foundation
import RBuildOCI
import RBuildTestSupport
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

    private var server: LoopbackHTTPServer!
    private let lock = NSLock()
    private var routes: [String: Answer]
    private var endlessSent = 0

    var port: Int { server.port }
    var host: String { server.host }
    /// The paths asked for, in order.
    var requests: [String] { server.requests }
    /// How many bytes of an endless answer went out before the reader stopped.
    var sentEndless: Int { lock.withLock { endlessSent } }

    init(_ routes: [String: Answer] = [:]) throws {
        self.routes = routes
        server = try LoopbackHTTPServer { [weak self] request, send in self?.answer(request.path, send) }
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

    private func answer(_ path: String, _ send: LoopbackHTTPServer.Send) {
        let answer = path == "/v2/" ? Answer(contentType: "application/json", body: Array("{}".utf8)) : self[path]
        guard let answer else {
            _ = send(LoopbackHTTPServer.head(404, [("Content-Length", "0")]))
            return
        }
        var headers: [(String, String)] = []
        if let t = answer.contentType { headers.append(("Content-Type", t)) }
        if !answer.endless { headers.append(("Content-Length", "\(answer.body.count)")) }
        guard send(LoopbackHTTPServer.head(answer.status, headers)) else { return }
        guard answer.endless else {
            _ = send(answer.body)
            return
        }
        guard send(answer.body) else { return }
        let chunk = [UInt8](repeating: 0x20, count: 64 << 10)
        var sent = answer.body.count
        while sent < 64 << 20, send(chunk) {
            sent += chunk.count
            lock.withLock { endlessSent = sent }
        }
    }
}
