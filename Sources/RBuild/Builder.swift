import Foundation
import RBuildAttest
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem
import Synchronization

/// Builds images from Dockerfiles in one state directory: the embedding API behind `rbuild build`.
/// A build lowers the Dockerfile to a graph of ops (RBuildDockerfile), once per platform into
/// one graph, so that work equal for several platforms or stages is one vertex; the solver
/// (RBuildSolver) runs the vertices the targets need, each looked up in the cache index by its
/// key before anything it reads is unpacked. What is in a key: Graph.swift.
public final class Builder: Sendable {
    public let store: ImageStore
    public let snapshotter: any Snapshotter
    let cache: CacheIndex
    /// Work by cache key, shared by concurrent builds of this builder (each key runs once).
    let steps = InFlight<CachedResult>()
    /// Base images pulled in this process (each once, however many stages name it).
    let pulls = InFlight<Descriptor>()

    /// How RUN steps are isolated (`Isolation.choose`), or why they cannot be here: a build that
    /// runs a step fails with that error.
    public let isolation: Result<IsolationChoice, RuntimeError>

    /// `stateDirectory` nil: the default (`$XDG_DATA_HOME/rbuild`); `snapshotter` nil: the first
    /// kind that works here (copy with the chroot isolation); `maxLayerSize`: the most bytes a base
    /// image's layer may unpack to (`--max-layer-size`; `MaxLayerSize.resolve` reads the flag and
    /// the environment); `isolation` nil: `RBUILD_ISOLATION`, else the strongest that works here.
    public init(stateDirectory: String? = nil, snapshotter kind: SnapshotterKind? = nil,
                maxLayerSize: Int64 = MaxLayerSize.defaultValue, isolation requested: Isolation? = nil) throws {
        do {
            isolation = .success(try Isolation.choose(requested))
        } catch let e as RuntimeError {
            if requested != nil { throw e }   // asked for by name: say so at once
            isolation = .failure(e)
        }
        var kind = kind
        if case .success(let c) = isolation, c.isolation == .chroot {
            // Nothing can be mounted: a root is a directory of its own.
            if let k = kind, k != .copy {
                throw RuntimeError(.badOption, "--snapshotter \(k.rawValue) cannot be used with the chroot isolation, which mounts nothing: use copy")
            }
            kind = .copy
        }
        store = try StateDirectory.open(stateDirectory)
        let tasks = SandboxTasks()
        snapshotter = try Snapshotters.make(try Snapshotters.choose(kind, tasks: tasks, stateDirectory: store.root).kind, stateDirectory: store.root, tasks: tasks,
                                            maxLayerSize: maxLayerSize)
        cache = try CacheIndex(path: store.layout.cacheIndex)
        try FileManager.default.createDirectory(atPath: store.layout.tmp, withIntermediateDirectories: true)
    }

    /// Reads the Dockerfile at `path` (or `CONTEXT/Dockerfile`) into `options`.
    public static func load(dockerfile path: String, into options: inout BuildOptions) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DockerfileError(file: path, line: 0, "cannot read the Dockerfile: \(path) does not exist or is not readable")
        }
        options.dockerfileText = String(decoding: data, as: UTF8.self)
        options.dockerfileName = (path as NSString).lastPathComponent
        options.dockerfilePath = path
    }

    /// Builds the target stage for `options.platform` (else the host's) and stores its config
    /// and manifest; exporting is up to the caller.
    public func build(_ options: BuildOptions) throws -> BuiltImage {
        var o = options
        o.platforms = [options.platform ?? Platform.host]
        return try build(platforms: o)[0]
    }

    /// Builds the target for every platform of `options.platforms` (else `platform`, else the
    /// host's) at once, in the order given. A platform whose RUN steps cannot run here (no qemu,
    /// no binfmt) fails the build before anything runs.
    public func build(platforms options: BuildOptions) throws -> [BuiltImage] {
        try waitFor { try await self.solve(options) }
    }

    /// `build(platforms:)` for async callers.
    public func solve(_ options: BuildOptions) async throws -> [BuiltImage] {
        let started = Int64(Date().timeIntervalSince1970)
        let agents = try SSHAgents(options.ssh)
        defer { agents.stop() }
        let (options, checkouts) = try await remoteContexts(options)
        defer { for c in checkouts { c.remove() } }
        let (solver, lowered) = try await prepare(options, secrets: BuildSecrets(secrets: options.secrets, agents: agents.sockets))
        let vertices = Graph.walk(lowered.map(\.root))
        for u in options.ulimits { try u.checkAllowed() }
        try checkEntitlements(vertices, options)
        try checkEmulation(vertices)
        let roots = lowered.map(\.root)
        let stacks = try await solver.localised(try await solver.solve(roots))
        let inline = options.cacheTo.contains { $0.kind == .inline }
        var images: [BuiltImage] = []
        for (stage, stack) in zip(lowered, stacks) {
            var cache: String?
            if inline { cache = try await inlineCache(stage.root, stack, solver: solver) }
            images.append(try await finish(stage, stack, solver: solver, options: options, inlineCache: cache))
        }
        try await exportCaches(options, roots: roots, solver: solver)
        if !options.attestations.isEmpty {
            let step = solver.reporter.start((options.label.map { "[\($0)] " } ?? "") + "generating attestations")
            do {
                for (i, list) in try await attestations(for: images, stages: lowered, solver: solver, options: options,
                                                         started: started).enumerated() {
                    images[i].attestations = list
                    step.output("\(images[i].manifest.platform?.description ?? "image"): " + list.map { $0.predicateType }.joined(separator: ", "))
                }
                step.finish()
            } catch {
                step.fail("\(error)")
                throw error
            }
        }
        return images
    }

    /// The inline cache of one image: the steps of its own chain.
    func inlineCache(_ root: Vertex, _ stack: Stack, solver: Solver) async throws -> String? {
        let records = await solver.cacheRecords([root], mode: .min)
        return try CacheRecords.inline(records, imageLayers: stack.layers)
    }

    /// Each `--cache-to` but the inline one, a progress step each. `ignore-error=true` turns a
    /// failure into a warning.
    func exportCaches(_ options: BuildOptions, roots: [Vertex], solver: Solver) async throws {
        let specs = options.cacheTo.filter { $0.kind != .inline }
        guard !specs.isEmpty else { return }
        let reporter = solver.reporter
        let imageLayers = await solver.imageLayers(roots)
        let mountIDs = Solver.cacheMountIDs(roots)
        var byMode: [CacheExportMode: [(key: Digest, stack: Stack)]] = [:]   // several exports, one mode: found once
        for spec in specs {
            let step = reporter.start("exporting cache to \(spec)")
            do {
                let records: [(key: Digest, stack: Stack)]
                if let known = byMode[spec.mode] {
                    records = known
                } else {
                    records = await solver.cacheRecords(roots, mode: spec.mode)
                    byMode[spec.mode] = records
                }
                let top = try await solver.exportCache(spec, records: records, imageLayers: imageLayers, cacheMountIDs: mountIDs) {
                    step.output($0)
                }
                step.output("writing cache manifest \(top.digest) done")
                step.finish()
            } catch {
                if spec.ignoreError {
                    step.output("WARNING: exporting the cache to \(spec) failed: \(error)", stream: 2)
                    step.finish()
                    continue
                }
                step.fail("\(error)")
                throw BuildFailure("exporting the cache to \(spec) failed: \(error)")
            }
        }
    }

    /// The cache key of every step the target needs (`[stage 2/4] RUN make` → key), inputs
    /// first, without running anything: what a rebuild would look up. Images are resolved (and
    /// pulled when missing); context files are hashed.
    public func cacheKeys(_ options: BuildOptions) throws -> [(step: String, key: Digest)] {
        try waitFor {
            let (options, checkouts) = try await self.remoteContexts(options)
            defer { for c in checkouts { c.remove() } }
            let (solver, lowered) = try await self.prepare(options)
            var out: [(step: String, key: Digest)] = []
            for v in Graph.walk(lowered.map(\.root)) where !v.inputs.isEmpty {
                out.append((v.name, try await solver.cacheKey(v)))
            }
            return out
        }
    }

    /// A checkout of a git context, removed when the build is done.
    struct ContextCheckout {
        let dir: String
        func remove() { try? removeTree(atPath: dir) }
    }

    /// `remoteContext` for the build and each of its target contexts (bake's `target:OTHER`).
    func remoteContexts(_ options: BuildOptions) async throws -> (BuildOptions, [ContextCheckout]) {
        var checkouts: [ContextCheckout] = []
        do {
            let (o, c) = try await remoteContext(options)
            var out = o
            checkouts += c.map { [$0] } ?? []
            for (name, other) in o.targetContexts.sorted(by: { $0.key < $1.key }) {
                let (resolved, more) = try await remoteContexts(other)
                out.targetContexts[name] = resolved
                checkouts += more
            }
            return (out, checkouts)
        } catch {
            for c in checkouts { c.remove() }
            throw error
        }
    }

    /// `options` with its git context (`contextURL`) checked out: the directory as
    /// `contextDirectory`, and the Dockerfile read from it unless one was given. As BuildKit's, a
    /// build with SOURCE_DATE_EPOCH gives the files the commit's time.
    func remoteContext(_ options: BuildOptions) async throws -> (BuildOptions, ContextCheckout?) {
        guard let url = options.contextURL else { return (options, nil) }
        var o = options
        let reporter = options.reporter ?? ProgressReporter(sink: options.progress)
        o.reporter = reporter
        guard let git = try GitReference.parse(url) else {
            throw BuildFailure("the build context \(url) is not a git URL (a directory, a git URL or - for none)")
        }
        var commitTimes = try GitSource(git)
        if options.layer.sourceDateEpoch != nil || options.buildArgs["SOURCE_DATE_EPOCH"] != nil { commitTimes.mtimeCommit = true }
        let source = commitTimes
        let repos = GitRepositories(layout: store.layout)
        let tmp = store.layout.tmp
        let dir = try makeTemporaryDirectory(in: tmp, prefix: "context-")
        let checkout = ContextCheckout(dir: dir)
        do {
            try await waitForThread {
                try reporter.step("[\(options.label.map { $0 + " " } ?? "")internal] load git source \(source.display)") { step in
                    let r = try repos.resolve(source)
                    step.output("\(r.fullRef ?? source.ref) \(r.commit)")
                    try repos.checkout(source, r, into: dir + "/tree")
                }
            }
            let view = SnapshotView(directory: dir + "/tree")
            let comps = try view.resolve("/" + source.subdir, followLast: true)
            guard try view.directory(comps) != nil else {
                throw BuildFailure("the build context \(source.display): \"\(source.subdir)\" is not a directory in the repository")
            }
            let context = ([dir + "/tree"] + comps).joined(separator: "/")
            o.contextDirectory = context
            if o.dockerfileText.isEmpty {
                let path = options.dockerfilePath ?? "Dockerfile"
                let inside = try view.resolve("/" + (comps + [path]).joined(separator: "/"), followLast: true)
                guard let bytes = try view.readFile("/" + inside.joined(separator: "/")) else {
                    throw BuildFailure("the build context \(source.display) has no \(path) (name another with -f)")
                }
                o.dockerfileText = String(decoding: bytes, as: UTF8.self)
                o.dockerfileName = (path as NSString).lastPathComponent
                o.dockerfilePath = ([dir + "/tree"] + inside).joined(separator: "/")
            }
            return (o, checkout)
        } catch let e as SolveError {
            checkout.remove()
            throw BuildFailure("the build context: \(e.message)")
        } catch {
            checkout.remove()
            throw error
        }
    }

    /// A solver for this build, and the Dockerfile lowered for each platform it asks for into
    /// one graph.
    func prepare(_ options: BuildOptions, secrets: BuildSecrets = BuildSecrets()) async throws -> (Solver, [LoweredStage]) {
        let platforms = options.platforms.isEmpty ? [options.platform ?? Platform.host] : options.platforms
        var seen = Set<String>()
        for p in platforms where !seen.insert(p.description).inserted {
            throw BuildFailure("--platform lists \(p) twice")
        }
        let reporter = options.reporter ?? ProgressReporter(sink: options.progress)
        let isolation = try self.isolation.get()
        if let warning = isolation.warning {
            reporter.note("isolation: \(isolation.isolation.rawValue) (\(warning))")
        }
        var imports: ImportedCaches?
        if !options.cacheFrom.isEmpty && !options.noCache {
            imports = ImportedCaches.load(options.cacheFrom, store: store.content, cache: cache, reporter: reporter,
                                          maxLayerSize: snapshotter.maxLayerSize)
        }
        let solver = Solver(store: store, snapshotter: snapshotter, cache: cache, reporter: reporter,
                            sourceDateEpoch: options.layer.sourceDateEpoch, steps: steps, secrets: secrets, imports: imports,
                            isolation: isolation.isolation)
        let lowered = try await solver.blocking { try self.lower(options, platforms: platforms, reporter: reporter) }
        return (solver, lowered)
    }

    /// The Dockerfile parsed once, its .dockerignore read, and lowered for each platform into
    /// one graph.
    func lower(_ options: BuildOptions, platforms: [Platform], reporter: ProgressReporter) throws -> [LoweredStage] {
        let resolver = ImageResolver(store: store, pull: options.pull, reporter: reporter, pulls: pulls,
                                     maxLayerSize: snapshotter.maxLayerSize)
        return try lower(options, platforms: platforms, reporter: reporter, graph: Graph(), resolver: resolver, depth: 0)
    }

    /// `lower` into `graph`: each of `options.targetContexts` first (another build's result for
    /// each platform, in the same graph), then this Dockerfile with them as named contexts.
    func lower(_ options: BuildOptions, platforms: [Platform], reporter: ProgressReporter, graph: Graph,
               resolver: ImageResolver, depth: Int) throws -> [LoweredStage] {
        guard depth < 16 else {
            throw BuildFailure("target contexts nest more than 16 deep (does a target name itself through target:?)")
        }
        var others: [String: [LoweredStage]] = [:]
        for (name, other) in options.targetContexts.sorted(by: { $0.key < $1.key }) {
            others[name] = try lower(other, platforms: platforms, reporter: reporter, graph: graph, resolver: resolver, depth: depth + 1)
        }
        let load = reporter.start("[\(options.label.map { $0 + " " } ?? "")internal] load build definition from \(options.dockerfileName)")
        let dockerfile: Dockerfile, definition: BuildDefinition
        do {
            dockerfile = try Dockerfile.parse(options.dockerfileText, fileName: options.dockerfileName)
            definition = try dockerfile.definition()
        } catch {
            load.fail("\(error)")
            throw error
        }
        load.output("transferring dockerfile: \(options.dockerfileText.utf8.count)B done")
        load.finish()
        var base = LoweringOptions(platform: platforms[0])
        base.buildArgs = options.buildArgs
        base.target = options.target
        base.buildContexts = options.buildContexts
        base.noCache = options.noCache
        base.noCacheFilter = options.noCacheFilter
        base.created = timestamp(options.layer.sourceDateEpoch)
        base.network = options.network
        base.extraHosts = options.extraHosts
        base.shmSize = options.shmSize
        base.ulimits = options.ulimits
        if let dir = options.contextDirectory {
            var st = stat()
            guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw BuildFailure("the build context \(dir) is not a directory")
            }
            let resolved = URL(fileURLWithPath: dir).standardizedFileURL.resolvingSymlinksInPath().path
            base.contextDirectory = resolved
            base.ignore = try reporter.step("[\(options.label.map { $0 + " " } ?? "")internal] load .dockerignore") { _ in
                try DockerIgnore.load(contextDirectory: resolved, dockerfilePath: options.dockerfilePath)
            }
        }
        return try platforms.enumerated().map { i, p in
            var o = base
            o.platform = p
            let labels = [options.label, platforms.count > 1 ? p.description : nil].compactMap { $0 }
            o.label = labels.isEmpty ? nil : labels.joined(separator: " ")
            o.stageContexts = others.mapValues { $0[i] }
            return try dockerfile.lower(o, definition: definition, graph: graph, resolver: resolver)
        }
    }

    /// A step on the host's network needs the `network.host` entitlement (as in buildx): without
    /// it the build fails here, before anything runs, naming the first such step.
    func checkEntitlements(_ vertices: [Vertex], _ options: BuildOptions) throws {
        guard !options.entitlements.contains(.networkHost) else { return }
        for v in vertices {
            guard case .exec(let e) = v.op, e.network == .host else { continue }
            let what = options.network == .host ? "--network host" : "RUN --network=host"
            let message = "\(what) needs the network.host entitlement: the step would share the host's network, "
                + "its 127.0.0.1 services and abstract unix sockets included. Pass --allow network.host to grant it"
            guard let o = v.origin else { throw BuildFailure(message) }
            throw BuildError(file: o.file, line: o.line, instruction: o.instruction, message: message)
        }
    }

    /// Every platform an exec vertex runs for can run here — or the error says which platform
    /// lacks what, and how to get it, before anything runs.
    func checkEmulation(_ vertices: [Vertex]) throws {
        var checked = Set<String>()
        for v in vertices {
            guard case .exec(let e) = v.op, checked.insert(e.platform.description).inserted else { continue }
            guard let arch = Architecture(platform: e.platform) else {
                throw BuildFailure("platform \(e.platform): rbuild cannot run RUN steps for it (known: \(Architecture.allCases.map(\.platform).joined(separator: ", ")))")
            }
            do {
                _ = try Emulation.mode(for: arch)
            } catch {
                let at = v.origin.map { " (RUN at \($0.file):\($0.line))" } ?? ""
                throw BuildFailure("platform \(e.platform)\(at): \(error)")
            }
        }
    }

    /// Writes the config and manifest of a solved stage: its layers, and a history entry per
    /// instruction (empty for those that wrote no layer).
    func finish(_ stage: LoweredStage, _ stack: Stack, solver: Solver, options: BuildOptions,
                inlineCache: String? = nil) async throws -> BuiltImage {
        var image = stage.image
        image.rootfs = ImageConfig.RootFS(diff_ids: stack.diffIDs)
        var history = image.history ?? []
        for step in stage.steps {
            var wrote = false
            if let v = step.vertex { wrote = try await solver.producedLayer(v) }
            history.append(ImageConfig.History(created: step.created, created_by: step.createdBy,
                                               comment: wrote ? step.comment : nil, empty_layer: wrote ? nil : true))
        }
        image.history = history
        var cfg = image.config ?? ImageConfig.Config()
        if !options.labels.isEmpty {
            var labels = cfg.Labels ?? [:]
            for (k, v) in options.labels { labels[k] = v }
            cfg.Labels = labels
        }
        image.config = cfg
        image.created = timestamp(options.layer.sourceDateEpoch)
        // A base image's inline cache is the base's, not this image's.
        image.inlineCache = inlineCache
        image.architecture = stage.platform.architecture
        image.os = stage.platform.os
        image.variant = stage.platform.variant
        let configBytes = try canonicalJSON(image)
        let configDigest = try store.content.put(configBytes)
        let manifest = Manifest(mediaType: MediaType.ociManifest,
                                config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                layers: stack.layers)
        let bytes = try canonicalJSON(manifest)
        let d = try store.content.put(bytes)
        return BuiltImage(manifest: Descriptor(mediaType: MediaType.ociManifest, digest: d, size: Int64(bytes.count), platform: stage.platform),
                          config: image, layers: stack.layers, diffIDs: stack.diffIDs)
    }

    /// The image with its layers compressed as `compression` (each layer converted once, and
    /// remembered in the cache index): the manifest to export.
    public func exportable(_ image: BuiltImage, compression: Compression, level: Int?) throws -> Descriptor {
        try compressedImage(image.manifest, compression: compression, level: level, store: store, cache: cache)
    }

    /// The root filesystem of a built image, unpacked in the snapshotter.
    public func rootfs(of image: BuiltImage) throws -> Snapshot {
        try snapshot(layers: image.layers, diffIDs: image.diffIDs, store: store, snapshotter: snapshotter)
    }
}

/// Runs blocking work on a thread of its own (not the concurrency pool) and waits for it.
func waitForThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread.detachNewThread { c.resume(with: Result { try work() }) }
    }
}

/// Runs async work from synchronous code (the CLI, a synchronous embedder) and waits for it.
/// The caller's thread blocks; the work runs on the concurrency pool and its own threads.
func waitFor<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let outcome = Mutex<Result<T, Error>?>(nil)
    Task(executorPreference: SolverExecutor.shared) {
        let r: Result<T, Error>
        do { r = .success(try await work()) } catch { r = .failure(error) }
        outcome.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}

/// A build failure that is not tied to one Dockerfile line (or gets its line from the caller).
public struct BuildFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}
