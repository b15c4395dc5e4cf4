import Foundation
import RBuildOCI
import RBuildSystem

/// The OCI distribution API for one registry, over `HTTP` (libcurl): anonymous, basic or
/// bearer-token auth (the `WWW-Authenticate` challenge is followed, tokens are kept per scope and
/// fetched again when a request is refused), manifests cut off at 4 MiB, blobs verified by digest
/// and size before the content store takes them.
public final class RegistryClient: @unchecked Sendable {
    public let registry: String
    let base: String
    let credentials: Credentials?
    /// The registry's own CA, when one is configured (see `caFile(for:)`).
    let caFile: String?
    private var tokens: [String: String] = [:]
    private var basicChallenged = false
    private let lock = NSLock()
    static let manifestTypes = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest]

    public init(registry reference: Reference, credentials: Credentials? = nil) throws {
        registry = reference.registry
        base = (reference.usesPlainHTTP ? "http://" : "https://") + reference.apiHost
        self.credentials = try credentials ?? Credentials.lookup(reference.registry)
        caFile = reference.usesPlainHTTP ? nil : Self.caFile(for: reference.registry)
    }

    /// A registry's own CA: RBUILD_REGISTRY_CA (a PEM file, for every registry), else `ca.crt` in
    /// the certs.d directory of its host:port, as docker and podman keep them.
    static func caFile(for registry: String) -> String? {
        let env = ProcessInfo.processInfo.environment
        if let f = env["RBUILD_REGISTRY_CA"], !f.isEmpty { return f }
        let home = homeDirectory()
        for dir in [home + "/.config/containers/certs.d", "/etc/containers/certs.d", "/etc/docker/certs.d"] {
            let f = dir + "/" + registry + "/ca.crt"
            if access(f, R_OK) == 0 { return f }
        }
        return nil
    }

    /// One request, synchronously (`file` uploads a file as the body; `sink` takes a success's
    /// body as it arrives). A 401 is met with the challenge's auth and the request sent once more.
    func send(_ method: String, _ url: String, scope: String, headers: [String: String] = [:], body: Data? = nil,
              file: StoredBlob? = nil, sink: ((Int, UnsafeRawBufferPointer) throws -> Void)? = nil,
              retried: Bool = false) throws -> HTTP.Response {
        let full = url.hasPrefix("http") ? url : base + url
        var all = headers
        if let auth = authorization(scope) { all["Authorization"] = auth }
        let r: HTTP.Response
        do {
            r = try HTTP.perform(method, full, headers: all, body: body, file: file, caFile: caFile, sink: sink)
        } catch let e as HTTP.TransportError {
            let certificate = e.description.contains("SSL") || e.description.contains("certificate")
            let hint = certificate
                ? "(a registry with its own CA: put it in ~/.config/containers/certs.d/\(registry)/ca.crt or name it with RBUILD_REGISTRY_CA)"
                : "(is the registry \(registry) up and reachable?)"
            throw RegistryError("\(e) \(hint)")
        }
        if r.status == 401 && !retried {
            try authenticate(r.header("WWW-Authenticate") ?? "", scope: scope)
            return try send(method, url, scope: scope, headers: headers, body: body, file: file, sink: sink, retried: true)
        }
        if r.status == 401 {
            throw RegistryError("\(registry) refused \(method) \(full): 401 unauthorized\(credentials == nil ? " (no credentials: `rbuild login \(registry)`)" : " (check the credentials for \(registry))")")
        }
        return r
    }

    func authorization(_ scope: String) -> String? {
        lock.lock()
        defer { lock.unlock() }
        if let t = tokens[scope] { return "Bearer " + t }
        if basicChallenged, let c = credentials {
            return "Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()
        }
        return nil
    }

    /// Answers a `WWW-Authenticate` challenge: Basic (the credentials are sent from now on) or
    /// Bearer (a token for `scope` from the realm, with the credentials when there are some).
    func authenticate(_ challenge: String, scope: String) throws {
        let scheme = challenge.split(separator: " ", maxSplits: 1).first?.lowercased() ?? ""
        if scheme == "basic" {
            guard credentials != nil else {
                throw RegistryError("\(registry) needs a user name and password (401): `rbuild login \(registry)`")
            }
            lock.lock(); basicChallenged = true; lock.unlock()
            return
        }
        guard scheme == "bearer" else { throw RegistryError("\(registry) asks for an auth scheme rbuild does not know: \(challenge)") }
        var params: [String: String] = [:]
        let rest = challenge.dropFirst(6)
        var i = rest.startIndex
        while i < rest.endIndex {
            guard let eq = rest[i...].firstIndex(of: "=") else { break }
            let key = rest[i..<eq].trimmingCharacters(in: CharacterSet(charactersIn: " ,")).lowercased()
            var j = rest.index(after: eq)
            var value = ""
            if j < rest.endIndex && rest[j] == "\"" {
                j = rest.index(after: j)
                while j < rest.endIndex && rest[j] != "\"" { value.append(rest[j]); j = rest.index(after: j) }
                if j < rest.endIndex { j = rest.index(after: j) }
            } else {
                while j < rest.endIndex && rest[j] != "," { value.append(rest[j]); j = rest.index(after: j) }
            }
            params[key] = value
            i = j
        }
        guard let realm = params["realm"], var comps = URLComponents(string: realm) else {
            throw RegistryError("\(registry) sent a bearer challenge without a realm: \(challenge)")
        }
        var query = comps.queryItems ?? []
        if let service = params["service"] { query.append(URLQueryItem(name: "service", value: service)) }
        query.append(URLQueryItem(name: "scope", value: scope))
        comps.queryItems = query
        guard let url = comps.url else { throw RegistryError("bad token realm \(realm)") }
        var headers: [String: String] = [:]
        if let c = credentials {
            headers["Authorization"] = "Basic " + Data("\(c.username):\(c.password)".utf8).base64EncodedString()
        }
        let r: HTTP.Response
        do {
            r = try HTTP.perform("GET", url.absoluteString, headers: headers, caFile: caFile)
        } catch {
            throw RegistryError("token server \(realm): \(error)")
        }
        guard r.status == 200, let json = try? JSONSerialization.jsonObject(with: r.body) as? [String: Any],
              let token = (json["token"] as? String) ?? (json["access_token"] as? String) else {
            throw RegistryError("token server \(realm) refused \(scope) (\(r.status))\(credentials == nil ? ": no credentials, `rbuild login \(registry)`" : "")")
        }
        lock.lock(); tokens[scope] = token; lock.unlock()
    }

    /// `GET /v2/` with the credentials: what `rbuild login` checks before storing them.
    public func checkLogin() throws {
        let r = try send("GET", "/v2/", scope: "registry:catalog:*")
        guard r.status == 200 else { throw fail("logging in", r) }
    }

    static func pullScope(_ repo: String) -> String { "repository:\(repo):pull" }
    static func pushScope(_ repo: String) -> String { "repository:\(repo):pull,push" }

    func fail(_ what: String, _ r: HTTP.Response) -> RegistryError {
        let body = String(decoding: r.body.prefix(300), as: UTF8.self)
        return RegistryError("\(what): \(registry) answered \(r.status)\(body.isEmpty ? "" : ": " + body)")
    }

    // MARK: - Pull

    /// The manifest or index `reference` names: its descriptor and bytes (verified against the
    /// digest when the reference has one). The body is read no further than 4 MiB
    /// (`DocumentLimits.maxSize`): a larger or endless answer is refused as it streams in. The
    /// descriptor's media type is the answer's Content-Type when that names a manifest or an
    /// index (as containerd's resolver takes it), else the document's own `mediaType`, which
    /// must then be there; `Document.decode` checks the content against it.
    public func manifest(_ repo: String, _ reference: String, expected: Digest? = nil) throws -> (Descriptor, [UInt8]) {
        let what = "manifest \(repo)\(reference.hasPrefix("sha256:") ? "@" : ":")\(reference) from \(registry)"
        var bytes: [UInt8] = []
        let r = try send("GET", "/v2/\(repo)/manifests/\(reference)", scope: Self.pullScope(repo),
                         headers: ["Accept": Self.manifestTypes.joined(separator: ", ")]) { _, chunk in
            guard bytes.count + chunk.count <= DocumentLimits.maxSize else {
                throw RegistryError("\(what) is larger than \(DocumentLimits.maxSize >> 20) MiB, the limit for a manifest or index: refused (stopped reading at \(bytes.count + chunk.count) bytes)")
            }
            bytes += chunk
        }
        guard r.status == 200 else { throw fail(what, r) }
        let digest = Digest.of(bytes)
        if let expected, expected != digest {
            throw RegistryError("manifest \(repo)@\(expected) is corrupt: expected \(expected), got \(digest)")
        }
        var type = r.header("Content-Type")?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if !Self.manifestTypes.contains(type) {
            type = try Document.detectedMediaType(bytes, digest: digest, from: "\(registry)/\(repo)")
        }
        return (Descriptor(mediaType: type, digest: digest, size: Int64(bytes.count)), bytes)
    }

    /// Downloads a blob into `store`, verified (digest and size) before it is stored; a cut
    /// connection is retried (three attempts).
    public func fetchBlob(_ repo: String, _ d: Descriptor, into store: ContentStore) throws {
        if store.contains(d.digest) { return }
        let partial = try Partial(store: store)
        defer { partial.writer.abort() }   // a no-op once committed
        var lastError: Error?
        for attempt in 0..<3 {
            if attempt > 0 { usleep(useconds_t(200_000 * attempt)) }
            do {
                try fetchBlobOnce(repo, d, into: partial)
                return
            } catch let e as OCIError where e.code == .corruptBlob {
                throw RegistryError("blob \(d.digest) of \(registry)/\(repo) is corrupt: \(e)")
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    /// A blob being downloaded: what has arrived so far stays across attempts, so a cut
    /// connection resumes with a Range request (a registry that answers 200 instead restarts it).
    final class Partial: @unchecked Sendable {
        let store: ContentStore
        var writer: BlobWriter
        init(store: ContentStore) throws {
            self.store = store
            writer = try BlobWriter(store: store)
        }
        func restart() throws {
            writer.abort()
            writer = try BlobWriter(store: store)
        }
    }

    func fetchBlobOnce(_ repo: String, _ d: Descriptor, into partial: Partial) throws {
        let resumeAt = partial.writer.size
        var restarted = false
        let r = try send("GET", "/v2/\(repo)/blobs/\(d.digest)", scope: Self.pullScope(repo),
                         headers: resumeAt > 0 ? ["Range": "bytes=\(resumeAt)-"] : [:]) { status, bytes in
            if status == 200 && resumeAt > 0 && !restarted {   // the range was ignored: start over
                try partial.restart()
                restarted = true
            }
            guard partial.writer.size + Int64(bytes.count) <= d.size else {
                throw OCIError(.corruptBlob, "expected \(d.size) bytes, got more")
            }
            try partial.writer.write(bytes)
        }
        guard r.status == 200 || (r.status == 206 && resumeAt > 0) else {
            throw RegistryError("blob \(d.digest): \(registry) answered \(r.status)")
        }
        guard partial.writer.size == d.size else {
            throw RegistryError("blob \(d.digest) from \(registry) was cut short: \(partial.writer.size) of \(d.size) bytes")
        }
        _ = try partial.writer.commit(expected: d.digest)
    }

    // MARK: - Push

    public func blobExists(_ repo: String, _ d: Digest) throws -> Bool {
        let r = try send("HEAD", "/v2/\(repo)/blobs/\(d)", scope: Self.pushScope(repo))
        return r.status == 200
    }

    /// Uploads one blob unless the repository has it: a cross-repository mount from `mountFrom`
    /// when given (the registry may refuse and start an upload instead), else one monolithic PUT
    /// of the file.
    /// How a blob reached the repository.
    public enum Pushed: Sendable { case existed, mounted, uploaded }

    @discardableResult
    public func pushBlob(_ repo: String, _ d: Descriptor, from blob: StoredBlob, mountFrom: String? = nil) throws -> Pushed {
        if try blobExists(repo, d.digest) { return .existed }
        var start = "/v2/\(repo)/blobs/uploads/"
        if let mountFrom { start += "?mount=\(d.digest)&from=\(mountFrom)" }
        let r = try send("POST", start, scope: Self.pushScope(repo), headers: ["Content-Length": "0"], body: Data())
        if r.status == 201 { return .mounted }
        guard r.status == 202, let location = r.header("Location") else {
            throw fail("starting the upload of \(d.digest) to \(repo)", r)
        }
        var target = location.hasPrefix("/") ? base + location : location
        let chunk = Self.chunkSize
        if d.size > chunk {
            target = try uploadChunks(repo, d, from: blob, to: target, chunk: chunk)
            target += (target.contains("?") ? "&" : "?") + "digest=\(d.digest)"
            let put = try send("PUT", target, scope: Self.pushScope(repo), headers: ["Content-Length": "0"], body: Data())
            guard put.status == 201 else { throw fail("finishing the upload of \(d.digest) to \(repo)", put) }
            return .uploaded
        }
        target += (target.contains("?") ? "&" : "?") + "digest=\(d.digest)"
        let put = try send("PUT", target, scope: Self.pushScope(repo),
                           headers: ["Content-Type": "application/octet-stream", "Content-Length": String(d.size)],
                           file: blob)
        guard put.status == 201 else { throw fail("uploading \(d.digest) to \(repo)", put) }
        return .uploaded
    }

    /// With `RBUILD_UPLOAD_CHUNK=BYTES`, blobs larger than that go up in PATCHes of that size (for
    /// registries or proxies that limit a request's body); by default every blob is one PUT
    /// streamed from its file, which is the fastest (chunks of 256 MiB made a 1 GiB push 1.6x slower).
    static var chunkSize: Int64 {
        ProcessInfo.processInfo.environment["RBUILD_UPLOAD_CHUNK"].flatMap { Int64($0) }.map { max($0, 1) } ?? .max
    }

    /// PATCH each chunk with its Content-Range (following the Location each answer gives);
    /// returns where the closing PUT goes.
    func uploadChunks(_ repo: String, _ d: Descriptor, from blob: StoredBlob, to start: String, chunk: Int64) throws -> String {
        // Read in order through the blob's check: the chunk holding the last byte is checked
        // before it is sent.
        let reader = try BlobReader(blob)
        var location = start
        var offset: Int64 = 0
        while offset < d.size {
            let n = Int(min(chunk, d.size - offset))
            var data = Data(count: n)
            var got = 0
            while got < n {
                let r = try data.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[got...])) }
                guard r > 0 else { throw RegistryError("short read of \(d.digest) at \(offset + Int64(got))") }
                got += r
            }
            let r = try send("PATCH", location, scope: Self.pushScope(repo),
                             headers: ["Content-Type": "application/octet-stream", "Content-Length": String(n),
                                       "Content-Range": "\(offset)-\(offset + Int64(n) - 1)"], body: data)
            guard r.status == 202, let next = r.header("Location") else {
                throw fail("uploading bytes \(offset)-\(offset + Int64(n) - 1) of \(d.digest) to \(repo)", r)
            }
            location = next.hasPrefix("/") ? base + next : next
            offset += Int64(n)
        }
        return location
    }

    public func pushManifest(_ repo: String, _ reference: String, _ bytes: [UInt8], mediaType: String) throws {
        let r = try send("PUT", "/v2/\(repo)/manifests/\(reference)", scope: Self.pushScope(repo),
                         headers: ["Content-Type": mediaType], body: Data(bytes))
        guard r.status == 201 else { throw fail("pushing the manifest \(repo):\(reference)", r) }
    }
}
