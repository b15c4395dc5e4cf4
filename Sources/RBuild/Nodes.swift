import Foundation
import RBuildAttest
import RBuildDockerfile
import RBuildExporters
import RBuildNodes
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSolver
import RBuildSystem
import Synchronization

/// What a node is asked to build: `BuildOptions` as they travel (the Dockerfile, arguments and
/// flags; secrets' values follow in frames of their own and are never written on the node).
struct NodeRequest: Codable {
    var dockerfileText: String
    var dockerfileName: String
    var contextURL: String?
    var dockerfilePath: String?
    /// A context tar follows (else there is no context, or `contextURL` is fetched by the node).
    var hasContext: Bool
    /// Named contexts whose values the node resolves itself (images, git, URLs).
    var buildContexts: [String: String]
    /// Named contexts that are local directories: a tar of each follows, in this order.
    var localContexts: [String]
    var buildArgs: [String: String]
    var target: String?
    var labels: [String: String]
    var noCache: Bool
    var noCacheFilter: [String]
    var pull: Bool
    var platforms: [String]
    var network: String
    var extraHosts: [String]
    var shmSize: Int64?
    var ulimits: [String]
    var entitlements: [String]
    var provenance: String?
    var sbom: Bool
    var sourceDateEpoch: Int64?
    var secrets: [String]
    /// ssh ids → the agent socket on the node (forwarded by the ssh session).
    var ssh: [String: String]
    var compression: String
    var level: Int?
    /// Push each platform's image by digest to these names (the local side pushes the index).
    var push: [String]
    /// Send the layers back (an output here needs them); else only configs and manifests.
    var sendLayers: Bool
}

/// What a node built: per platform, the manifest (layers compressed as asked) and attestations.
struct NodeResult: Codable {
    struct Image: Codable {
        var manifest: Descriptor
        var attestations: [WireAttestation]
    }
    struct WireAttestation: Codable {
        var predicateType: String
        var predicate: Data
    }
    var images: [Image]
}

/// A blob on its way: its descriptor, then its bytes in data frames.
struct WireBlob: Codable {
    var digest: Digest
    var size: Int64
}

/// Relays a node's progress into this build's: each of its steps becomes one of ours, its name
/// prefixed with the node's.
final class NodeProgressRelay: @unchecked Sendable {
    let reporter: ProgressReporter
    let prefix: String
    private var steps: [Int: ProgressReporter.Step] = [:]

    init(reporter: ProgressReporter, node: String) {
        self.reporter = reporter
        prefix = "[\(node)] "
    }

    func handle(_ event: BuildEvent) {
        switch event {
        case .started(let n, let name): steps[n] = reporter.start(prefix + name)
        case .output(let n, let stream, let text): steps[n]?.output(text, stream: stream)
        case .cached(let n): steps[n]?.cached()
        case .finished(let n, _): steps[n]?.finish()
        case .failed(let n, _, let message): steps[n]?.fail(message)
        case .note(let text): reporter.note(prefix + text)
        }
    }

    /// Steps the node never ended (it failed or vanished) end as failed.
    func failOpen(_ message: String) {
        for (_, s) in steps { s.fail(message) }
    }
}

/// A progress sink that sends every event to the local side.
final class FrameProgress: ProgressSink {
    let writer: FrameWriter
    init(_ writer: FrameWriter) { self.writer = writer }
    /// As a history log's line (`RecordedEvent`): both ends run the same rbuild.
    func handle(_ event: BuildEvent) { try? writer.write(.event, RecordedEvent(time: 0, event: event).line) }
}

extension Builder {
    /// The platforms of `options` spread over `nodes` (sessions from `NodeLink.connect`) and
    /// this machine (the rest), built at once; each node's images come back into this store
    /// (layers only when an output here needs them), in the order of `options.platforms`.
    func buildAcrossNodes(_ options: BuildOptions, nodes: [NodeLink], outputs: [OutputSpec], tags: [String],
                          reporter: ProgressReporter) throws -> [BuiltImage] {
        guard options.targetContexts.isEmpty else {
            throw BuildFailure("bake targets used as contexts (target:NAME) cannot be built on a builder with remote nodes yet: use the default builder")
        }
        // A node that is gone shows as EPIPE on its stream and is reported by name; the signal
        // would end this process without a word.
        signal(SIGPIPE, SIG_IGN)
        let remote = Set(nodes.flatMap(\.platforms).map(\.description))
        var local = options
        local.platforms = options.platforms.filter { !remote.contains($0.description) }
        let push = outputs.filter { $0.kind == .registry }.flatMap { $0.names(tags: tags) }
        let sendLayers = outputs.contains { $0.kind != .registry && $0.kind != .cacheonly }
        let compression = try outputs.lazy.compactMap { try $0.compression() }.first ?? (.gzip, nil)
        let request = try nodeRequest(options, push: push, sendLayers: sendLayers, compression: compression)

        let results = Mutex<[String: [BuiltImage]]>([:])
        // The first failure is the cause: the other nodes are stopped because of it (and say so).
        let firstFailure = Mutex<Error?>(nil)
        let group = DispatchGroup()
        for link in nodes {
            group.enter()
            Thread.detachNewThread {
                do {
                    let images = try self.runOnNode(link, request: request, options: options, reporter: reporter)
                    results.withLock { $0[link.node.name] = images }
                } catch {
                    firstFailure.withLock { if $0 == nil { $0 = error } }
                    for other in nodes where other !== link { other.closeInput() }
                }
                group.leave()
            }
        }
        // An interrupt (Ctrl-C, or a signal passed on to this process) stops every node's build:
        // each sees the end of its stream.
        let finished = Mutex(false)
        Thread.detachNewThread {
            while !finished.withLock({ $0 }) {
                if Sandbox.interruptedBy != 0 {
                    for link in nodes { link.closeInput() }
                    return
                }
                usleep(100_000)
            }
        }
        defer { finished.withLock { $0 = true } }
        var localImages: [BuiltImage] = []
        var localError: Error?
        if !local.platforms.isEmpty {
            do { localImages = try build(platforms: local) } catch {
                localError = error
                firstFailure.withLock { if $0 == nil { $0 = error } }
                for link in nodes { link.closeInput() }
            }
        }
        group.wait()
        for link in nodes { link.closeInput(); link.wait() }
        if let e = firstFailure.withLock({ $0 }) ?? localError { throw e }
        var byPlatform: [String: BuiltImage] = [:]
        for image in localImages + results.withLock({ $0.values.flatMap { $0 } }) {
            byPlatform[image.manifest.platform?.description ?? ""] = image
        }
        return try options.platforms.map { p in
            guard let image = byPlatform[p.description] else { throw BuildFailure("no node returned an image for \(p)") }
            return image
        }
    }

    func nodeRequest(_ o: BuildOptions, push: [String], sendLayers: Bool, compression: (Compression, Int?)) throws -> NodeRequest {
        var named: [String: String] = [:], local: [String] = []
        for (name, value) in o.buildContexts.sorted(by: { $0.key < $1.key }) {
            if value.hasPrefix("oci-layout://") {
                throw BuildFailure("--build-context \(name)=\(value): an OCI layout on this machine cannot be sent to a remote node yet; push it to a registry and name it docker-image://REF")
            }
            let remote = value.contains("://") || (try? BuildOptions.isGitContext(value)) == true
            if remote { named[name] = value } else { local.append(name) }
        }
        return NodeRequest(
            dockerfileText: o.dockerfileText, dockerfileName: o.dockerfileName, contextURL: o.contextURL,
            dockerfilePath: o.contextURL != nil ? o.dockerfilePath : nil, hasContext: o.contextURL == nil && o.contextDirectory != nil,
            buildContexts: named, localContexts: local, buildArgs: o.buildArgs, target: o.target, labels: o.labels,
            noCache: o.noCache, noCacheFilter: o.noCacheFilter, pull: o.pull, platforms: [], network: o.network.rawValue,
            extraHosts: o.extraHosts.map(\.description), shmSize: o.shmSize, ulimits: o.ulimits.map(\.description),
            entitlements: o.entitlements.map(\.rawValue).sorted(), provenance: o.attestations.provenance?.rawValue,
            sbom: o.attestations.sbom, sourceDateEpoch: o.layer.sourceDateEpoch, secrets: o.secrets.keys.sorted(), ssh: [:],
            compression: compression.0.rawValue, level: compression.1, push: push, sendLayers: sendLayers)
    }

    /// Sends `link`'s node its part and takes back what it built.
    func runOnNode(_ link: NodeLink, request: NodeRequest, options: BuildOptions, reporter: ProgressReporter) throws -> [BuiltImage] {
        let name = link.node.name
        var request = request
        request.platforms = link.platforms.map(\.description)
        request.ssh = link.agentSockets
        let relay = NodeProgressRelay(reporter: reporter, node: name)
        // ssh's own messages (a refused connection, a host key mismatch), for the error.
        let errors = Mutex<[UInt8]>([])
        let errorsDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(link.errors, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                errors.withLock { $0 += buf[0..<n]; if $0.count > 16384 { $0.removeFirst($0.count - 16384) } }
            }
            close(link.errors)
            errorsDone.signal()
        }
        func failure(_ message: String) -> Error {
            link.closeInput()   // the node stops, ssh ends, and its stderr with it
            errorsDone.wait()
            let ssh = String(decoding: errors.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let why = ssh.isEmpty ? message : ssh.split(separator: "\n").suffix(3).joined(separator: "; ")
            relay.failOpen("node \(name) failed")
            return BuildFailure("node \(name) (\(link.node.endpoint)): \(why)")
        }
        let writer = FrameWriter(fd: link.input, what: "node \(name)")
        // The request: a failed write means the node is gone; its reason comes from ssh's stderr.
        let sendStep = reporter.start("[\(name)] sending the build context")
        do {
            try writer.write(.header, json: request)
            let secrets = BuildSecrets(secrets: options.secrets)
            for id in request.secrets {
                guard let value = try secrets.value(id) else { continue }
                try writer.write(.secret, Array(id.utf8) + [0] + value)
            }
            var sent = ContextArchive.Summary()
            func send(_ dir: String, dockerfilePath: String?) throws {
                let ignore = try DockerIgnore.load(contextDirectory: dir, dockerfilePath: dockerfilePath)
                let s = try ContextArchive.write(directory: dir, ignore: ignore) { try writer.write(chunked: .context, $0) }
                try writer.write(.context)   // an empty chunk: this tar's end
                sent.files += s.files
                sent.bytes += s.bytes
            }
            if request.hasContext, let dir = options.contextDirectory { try send(dir, dockerfilePath: options.dockerfilePath) }
            for n in request.localContexts { try send(options.buildContexts[n]!, dockerfilePath: nil) }
            try writer.write(.end)
            sendStep.output("\(sent.files) files, \(sent.bytes) bytes to \(link.node.endpoint)")
            sendStep.finish()
        } catch {
            sendStep.fail("\(error)")
            throw failure("\(error)")
        }
        let reader = FrameReader(fd: link.output, what: "node \(name)")
        defer { close(link.output) }
        var blob: (w: BlobWriter, want: WireBlob, got: Int64)?
        do {
            while let (kind, bytes) = try reader.next() {
                if kind != .data, let b = blob {
                    throw NodeError("node \(name) sent \(b.got) of blob \(b.want.digest)'s \(b.want.size) bytes")
                }
                switch kind {
                case .event:
                    if let e = RecordedEvent(line: Substring(decoding: bytes.dropLast(), as: UTF8.self)) { relay.handle(e.event) }
                case .blob:
                    let want = try JSONDecoder().decode(WireBlob.self, from: Data(bytes))
                    let w = try BlobWriter(store: store.content)
                    blob = (w, want, 0)
                    if want.size == 0 { _ = try w.commit(expected: want.digest); blob = nil }
                case .data:
                    guard var b = blob else { throw NodeError("node \(name) sent data outside a blob") }
                    b.got += Int64(bytes.count)
                    guard b.got <= b.want.size else { throw NodeError("node \(name): blob \(b.want.digest) is larger than \(b.want.size) bytes") }
                    try b.w.write(bytes)
                    if b.got == b.want.size { _ = try b.w.commit(expected: b.want.digest); blob = nil } else { blob = b }
                case .result:
                    let result = try JSONDecoder().decode(NodeResult.self, from: Data(bytes))
                    return try result.images.map { try remoteImage($0) }
                case .failure:
                    let message = (try? JSONDecoder().decode([String: String].self, from: Data(bytes)))?["error"] ?? "failed"
                    relay.failOpen("node \(name) failed")
                    throw BuildFailure("node \(name): \(message)")
                default:
                    throw NodeError("node \(name) sent a frame of kind \(kind) out of place")
                }
            }
        } catch let e as BuildFailure {
            throw e
        } catch {
            throw failure("\(error)")
        }
        throw failure("the connection ended before the node sent its result (is rbuild \(rbuildVersion) installed there?)")
    }

    /// A node's image as this store now holds it (config and manifest, and layers when sent).
    func remoteImage(_ image: NodeResult.Image) throws -> BuiltImage {
        let manifest = try decodeManifest(try store.content.read(image.manifest), as: image.manifest)
        let config = try JSONDecoder().decode(ImageConfig.self, from: Data(try store.content.read(manifest.config)))
        var built = BuiltImage(manifest: image.manifest, config: config, layers: manifest.layers, diffIDs: config.rootfs.diff_ids)
        built.attestations = image.attestations.map { Attestation(predicateType: $0.predicateType, predicate: Array($0.predicate)) }
        return built
    }

    /// The node side (`rbuild node-build`): reads a request from `input`, builds, and answers on
    /// `output`. The end of `input` afterwards (the local side gone or giving up) interrupts the
    /// build. Returns the exit status.
    public func serveNode(input: Int32, output: Int32) -> Int32 {
        signal(SIGPIPE, SIG_IGN)   // the local side gone: EPIPE, then the build stops
        let writer = FrameWriter(fd: output, what: "the local side")
        do {
            try serveNode(FrameReader(fd: input, what: "the local side"), writer)
            return 0
        } catch {
            let message = Sandbox.interruptedBy != 0 ? "interrupted" : "\(error)"
            try? writer.write(.failure, json: ["error": message])
            return 1
        }
    }

    func serveNode(_ reader: FrameReader, _ writer: FrameWriter) throws {
        let head = try reader.expect()
        guard head.kind == .header else { throw NodeError("the request does not start with a header") }
        let r = try JSONDecoder().decode(NodeRequest.self, from: Data(head.bytes))
        var options = BuildOptions()
        var secrets: [String: [UInt8]] = [:]
        var next = try reader.expect()
        while next.kind == .secret {
            guard let nul = next.bytes.firstIndex(of: 0) else { throw NodeError("a secret without its id") }
            secrets[String(decoding: next.bytes[..<nul], as: UTF8.self)] = Array(next.bytes[(nul + 1)...])
            next = try reader.expect()
        }
        let dir = try makeTemporaryDirectory(in: store.layout.tmp, prefix: "node-context-")
        defer { try? removeTree(atPath: dir) }
        var pending: (kind: FrameKind, bytes: [UInt8])? = next
        func receive(_ into: String) throws {
            try FileManager.default.createDirectory(atPath: into, withIntermediateDirectories: true)
            var ended = false
            func chunk() throws -> [UInt8]? {
                let f = try pending ?? reader.expect()
                pending = nil
                guard f.kind == .context else { throw NodeError("the context ended early (a \(f.kind) frame)") }
                ended = f.bytes.isEmpty
                return ended ? nil : f.bytes
            }
            try ContextArchive.extract(into: into, read: chunk)
            // libarchive stops at the tar's end blocks: what follows, up to the empty chunk, is padding.
            while !ended { _ = try chunk() }
        }
        if r.hasContext {
            try receive(dir + "/context")
            options.contextDirectory = dir + "/context"
        }
        for (i, name) in r.localContexts.enumerated() {
            try receive(dir + "/named/\(i)")
            options.buildContexts[name] = dir + "/named/\(i)"
        }
        // The agent sockets the session made here (sshd leaves them behind): the local side
        // named them; only names of that form are removed.
        defer {
            for p in r.ssh.values where p.hasPrefix("/tmp/rbuild-agent-") && !p.dropFirst(5).contains("/") { unlink(p) }
        }
        let end = try pending ?? reader.expect()
        guard end.kind == .end else { throw NodeError("the request has a \(end.kind) frame where its end belongs") }
        // From here on, the local side's end of the stream stops the build.
        Thread.detachNewThread {
            while (try? reader.next()) != nil {}
            kill(getpid(), SIGINT)
        }
        options.dockerfileText = r.dockerfileText
        options.dockerfileName = r.dockerfileName
        options.contextURL = r.contextURL
        options.dockerfilePath = r.dockerfilePath
        for (k, v) in r.buildContexts { options.buildContexts[k] = v }
        options.buildArgs = r.buildArgs
        options.target = r.target
        options.labels = r.labels
        options.noCache = r.noCache
        options.noCacheFilter = r.noCacheFilter
        options.pull = r.pull
        options.platforms = try r.platforms.map(Platform.init(parsing:))
        options.network = NetworkMode(rawValue: r.network) ?? .isolated
        options.extraHosts = try r.extraHosts.map(ExtraHost.parse)
        options.shmSize = r.shmSize
        options.ulimits = try r.ulimits.map(Ulimit.parse)
        options.entitlements = Set(try r.entitlements.map(Entitlement.parse))
        if let p = r.provenance { try options.attestations.addProvenance("mode=" + p) }
        options.attestations.sbom = r.sbom
        options.layer.sourceDateEpoch = r.sourceDateEpoch
        options.secrets = secrets.mapValues { .bytes($0) }
        options.ssh = r.ssh.mapValues { [$0] }
        let reporter = ProgressReporter(sink: FrameProgress(writer))
        options.reporter = reporter
        options.progress = nil
        let images = try build(platforms: options)
        guard let compression = Compression(rawValue: r.compression) else { throw NodeError("compression \(r.compression) is unknown here") }
        var result = NodeResult(images: [])
        var sent = Set<Digest>()
        func send(_ d: Descriptor) throws {
            guard sent.insert(d.digest).inserted else { return }
            try writer.write(.blob, json: WireBlob(digest: d.digest, size: d.size))
            // An uncompressed layer kept only as its snapshot (LayerRecipe) is packed as it goes.
            if let recipe = store.content.packableRecipe(d.digest) {
                try store.content.pack(d.digest, recipe: recipe) { try writer.write(chunked: .data, $0) }
                return
            }
            let reader = try BlobReader(store.content.blob(d))
            try reader.forEach { try writer.write(chunked: .data, $0) }
        }
        for image in images {
            let top = try exportable(image, compression: compression, level: r.level)
            let manifest = try decodeManifest(try store.content.read(top), as: top)
            var pushedTo = Set<String>()   // by digest: two tags of one repository are one push
            for name in r.push {
                var ref = try Reference(parsing: name)
                ref.tag = nil
                ref.digest = top.digest
                guard pushedTo.insert("\(ref.registry)/\(ref.repository)").inserted else { continue }
                try reporter.step("pushing \(top.platform?.description ?? "") to \(ref.registry)/\(ref.repository)") { step in
                    _ = try Distribution.push(top, to: ref, store: store) { step.output($0) }
                }
            }
            if r.sendLayers { for l in manifest.layers { try send(l) } }
            try send(manifest.config)
            try send(top)
            result.images.append(.init(manifest: top, attestations: image.attestations.map {
                .init(predicateType: $0.predicateType, predicate: Data($0.predicate))
            }))
        }
        try writer.write(.result, json: result)
    }
}

extension Builder {
    /// Whether this machine runs `platform`'s binaries without an emulator.
    public static func runsNatively(_ platform: Platform) -> Bool {
        guard let arch = Architecture(platform: platform), let mode = try? Emulation.mode(for: arch) else { return false }
        if case .native = mode { return true }
        return false
    }

    /// Sessions with the nodes of `builder` that get some of `platforms` (`Placement.place`;
    /// nodes are probed first when placing needs to know what they emulate, and the probes kept
    /// in the builder's file). The platforms no node gets are built here. `ssh` (`--ssh`
    /// values) are forwarded to each node as agent sockets of the session (an agent's socket
    /// only: `default` or ID=SOCKET). Call before entering a user namespace: ssh must run as the
    /// user, with the user's ~/.ssh.
    public static func connectNodes(_ builder: BuilderConfig, platforms: [Platform], store: BuilderStore,
                                    ssh: [String: [String]] = [:]) throws -> [NodeLink] {
        var builder = builder
        if Placement.needsProbe(platforms, nodes: builder.nodes, localNative: runsNatively) {
            var changed = false
            for i in builder.nodes.indices where builder.nodes[i].probe == nil {
                if let probe = try? NodeLink.probe(builder.nodes[i]) {
                    builder.nodes[i].probe = probe
                    changed = true
                }
            }
            if changed { try? store.save(builder) }
        }
        let placements = Placement.place(platforms, nodes: builder.nodes, localNative: runsNatively).filter { $0.node != nil }
        var forwards: [(id: String, local: String)] = []
        if !placements.isEmpty {
            for (id, paths) in ssh.sorted(by: { $0.key < $1.key }) {
                let path = paths.first ?? ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"] ?? ""
                var st = stat()
                guard paths.count <= 1, stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else {
                    throw BuildFailure("--ssh \(id): a build on remote nodes forwards an agent's socket (default, or \(id)=SOCKET); key files are not sent to nodes: load them into an agent (ssh-add) first")
                }
                forwards.append((id, path))
            }
        }
        var links: [NodeLink] = []
        do {
            for p in placements {
                // A name no one else can guess, in the node's /tmp, made by sshd with mode 0600.
                let agents = forwards.map { f in (id: f.id, remote: "/tmp/rbuild-agent-\(randomHex(16))-\(f.id).sock", local: f.local) }
                links.append(try NodeLink.connect(p.node!, platforms: p.platforms, forwards: agents.map { ($0.remote, $0.local) },
                                                  agentSockets: Dictionary(uniqueKeysWithValues: agents.map { ($0.id, $0.remote) })))
            }
        } catch {
            for l in links { l.closeInput(); l.wait() }
            throw error
        }
        return links
    }
}

/// `count` random bytes in hex.
func randomHex(_ count: Int) -> String {
    var g = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }.map { String(format: "%02x", $0) }.joined()
}
