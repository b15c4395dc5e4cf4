import Dispatch
import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSnapshots
import RBuildSystem
import Synchronization

/// A root filesystem as a stack of layers: what a vertex's result is.
public struct Stack: Sendable {
    public var layers: [Descriptor] = []
    public var diffIDs: [Digest] = []
    /// The snapshot of every layer, when this process has it at hand (made or unpacked).
    var snapshot: Snapshot?

    public init(layers: [Descriptor] = [], diffIDs: [Digest] = []) {
        self.layers = layers
        self.diffIDs = diffIDs
    }

    func adding(_ r: CachedResult, snapshot made: Snapshot?) -> Stack {
        guard let layer = r.layer, let diffID = r.diffID else { return self }
        var s = Stack(layers: layers + [layer], diffIDs: diffIDs + [diffID])
        s.snapshot = made
        return s
    }
}

/// A failed build step, located in the Dockerfile, with the tail of its output.
public struct BuildError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int
    /// The instruction as written.
    public var instruction: String
    public var message: String
    /// The last lines the step printed (RUN).
    public var outputTail: [String] = []

    public init(file: String, line: Int, instruction: String, message: String, outputTail: [String] = []) {
        self.file = file
        self.line = line
        self.instruction = instruction
        self.message = message
        self.outputTail = outputTail
    }

    public var description: String {
        var s = message + "\n\n" + "\(file):\(line)\n" + "--------------------\n" + "  \(line) | >>> \(instruction)\n" + "--------------------"
        if !outputTail.isEmpty {
            s += "\nlast output:\n" + outputTail.map { "  " + $0 }.joined(separator: "\n")
        }
        return s
    }
}

/// Runs a graph. Each vertex is looked at once per solver (equal definitions are one vertex), and
/// each cache key is computed before anything is unpacked: a vertex whose key the cache index has
/// takes the stored layer without materialising, pulling or running its inputs. Independent
/// vertices run at once (async tasks); the blocking work — sandboxes, layer writes, unpacking —
/// runs on threads of its own, at most `parallelism` at a time. The first failure cancels
/// what has not started and is thrown once running work has returned.
public final class Solver: Sendable {
    public let store: ImageStore
    public let snapshotter: any Snapshotter
    public let cache: CacheIndex
    public let reporter: ProgressReporter
    /// Layers are written uncompressed (fast to write, cheap to unpack); exports compress them.
    let layerOptions: LayerOptions
    /// Work by cache key, shared by the solvers of one `Builder` (concurrent builds in one process).
    let steps: InFlight<CachedResult>
    let slots: DispatchSemaphore
    let tmpRoot: String
    /// What RUN --mount=type=secret and type=ssh read.
    let secrets: BuildSecrets
    /// RUN --mount=type=cache directories.
    let cacheMounts: CacheMounts
    /// The caches `--cache-from` named (nil: none, or `--no-cache`).
    let imports: ImportedCaches?
    /// How RUN steps are isolated (nil: `Isolation.choose()`'s pick).
    let isolation: Isolation?

    let keys = LockedDictionary<Digest, Task<Digest, Error>>()
    let stacks = LockedDictionary<Digest, Task<Stack, Error>>()
    private let hashers = LockedDictionary<String, ContextHasher>()
    private let fetching = LockedDictionary<Digest, Task<Download, Error>>()
    private let fetched = LockedDictionary<Digest, Download>()
    private let matched = LockedDictionary<String, (matches: [CopyMatch], ignore: DockerIgnore)>()
    /// Git sources: the state dir's repositories, each ref resolved once per solve, each commit
    /// checked out once (on the first copy that needs its files).
    let gits: GitRepositories
    private let resolving = LockedDictionary<Digest, Task<GitResolved, Error>>()
    private let resolved = LockedDictionary<Digest, GitResolved>()
    private let checkouts = Mutex<[Digest: LayerStaging]>([:])

    public init(store: ImageStore, snapshotter: any Snapshotter, cache: CacheIndex, reporter: ProgressReporter,
                sourceDateEpoch: Int64?, steps: InFlight<CachedResult> = InFlight(), secrets: BuildSecrets = BuildSecrets(),
                imports: ImportedCaches? = nil, isolation: Isolation? = nil,
                parallelism: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) {
        self.store = store
        self.isolation = isolation
        self.snapshotter = snapshotter
        self.cache = cache
        self.reporter = reporter
        var o = LayerOptions()
        o.compression = .none
        o.level = nil
        o.sourceDateEpoch = sourceDateEpoch
        layerOptions = o
        self.steps = steps
        slots = DispatchSemaphore(value: parallelism)
        tmpRoot = store.layout.tmp
        self.secrets = secrets
        cacheMounts = CacheMounts(root: store.layout.cacheMounts, tasks: snapshotter.tasks)
        self.imports = imports
        gits = GitRepositories(layout: store.layout)
    }

    /// The stacks of `roots`, in order. Context digests learnt on the way are remembered in the
    /// cache index (even when the solve fails).
    public func solve(_ roots: [Vertex]) async throws -> [Stack] {
        defer { for h in hashers.values { h.save() } }
        do {
            return try await withThrowingTaskGroup(of: (Int, Stack).self) { group in
                for (i, r) in roots.enumerated() {
                    group.addTask { (i, try await self.stack(r)) }
                }
                var out = [Stack?](repeating: nil, count: roots.count)
                for try await (i, s) in group { out[i] = s }
                return out.map { $0! }
            }
        } catch {
            cancelAll()
            // Let running work return before the error leaves (no sandbox outlives the solve).
            for t in stacks.values { _ = await t.result }
            throw error
        }
    }

    /// Whether `vertex`'s own op wrote a layer (false for an empty change and for sources); asks
    /// for the vertex's result (already there after `solve`).
    public func producedLayer(_ vertex: Vertex) async throws -> Bool {
        guard case .source = vertex.op else {
            let mine = try await stack(vertex).layers.count
            let base = try await stack(vertex.inputs[0]).layers.count
            return mine > base
        }
        return false
    }

    func cancelAll() {
        for t in stacks.values { t.cancel() }
        for t in keys.values { t.cancel() }
    }

    // MARK: - Keys

    /// The vertex's cache key (see Graph.swift for what is in it and what never is).
    public func cacheKey(_ vertex: Vertex) async throws -> Digest {
        let task = keys.insertIfAbsent(vertex.digest, Task(executorPreference: SolverExecutor.shared) { try await self.computeKey(vertex) })
        return try await task.value
    }

    private func computeKey(_ vertex: Vertex) async throws -> Digest {
        var k = CacheKey(parent: nil)
        vertex.op.encode(into: &k, forKey: true)
        switch vertex.op {
        case .source(.scratch), .source(.inline):
            return k.digest
        case .source(.image(_, let manifest, _)):
            return manifest
        case .source(.http):
            k.add("content", try await download(vertex).digest.description)
            return k.digest
        case .source(.git):
            k.add("commit", try await resolveGit(vertex).commit)
            return k.digest
        case .source(.local(_, let path, let excludes)):
            k.add("content", try localKey(path: path, excludes: excludes, paths: ["."], keyword: "", what: "").description)
            return k.digest
        case .exec, .file:
            if vertex.op.writesLayer { k.add("layer", "epoch:\(layerOptions.sourceDateEpoch ?? -1)") }
            for (i, input) in vertex.inputs.enumerated() {
                if case .source(.local(_, let path, let excludes)) = input.op {
                    let (paths, keyword, what) = vertex.localReads(input: i)
                    k.add("input", try located(vertex) { try localKey(path: path, excludes: excludes, paths: paths, keyword: keyword, what: what) }.description)
                } else {
                    k.add("input", try await cacheKey(input).description)
                }
            }
            return k.digest
        }
    }

    /// The files of a local directory that `paths` name (globs expanded, .dockerignore
    /// honoured), each by its path in the directory and the digest of its content: the part of
    /// the directory a copy reads, and nothing else (a file it does not read can change freely).
    func localKey(path: String, excludes: [String], paths: [String], keyword: String, what: String) throws -> Digest {
        let hasher = hashers.insertIfAbsent(path, ContextHasher(root: path, index: cache))
        var k = CacheKey(parent: nil)
        for p in paths {
            let (found, ignore) = try localMatches(path: path, excludes: excludes, pattern: p, keyword: keyword, what: what)
            let include: ((String) -> Bool)? = ignore.patterns.isEmpty ? nil : { !ignore.matches($0) }
            for m in found {
                let rel = m.comps.joined(separator: "/")
                k.add("src", rel + "\u{0}" + (try hasher.digest(of: rel, include: include)).description)
            }
        }
        return k.digest
    }

    /// The entries `pattern` names in a local directory, .dockerignore (`excludes`) applied,
    /// found once per solve: the key and the copy then read the same files, and the directory is
    /// searched once.
    func localMatches(path: String, excludes: [String], pattern: String, keyword: String,
                      what: String) throws -> (matches: [CopyMatch], ignore: DockerIgnore) {
        let id = ([path, pattern] + excludes).joined(separator: "\u{0}")
        if let known = matched[id] { return known }
        let ignore = DockerIgnore(excludes.joined(separator: "\n"))
        let found = try match(SnapshotView(directory: path), pattern, what: what, local: true)
            .filter { !ignore.matches($0.localRel ?? "") || $0.comps.isEmpty }
        guard !found.isEmpty else {
            throw SolveError("\(keyword) failed: \"\(pattern)\" not found in the \(what) or excluded by .dockerignore")
        }
        matched.set(id, (found, ignore))
        return (found, ignore)
    }

    // MARK: - Results

    /// The vertex's result, computed once.
    func stack(_ vertex: Vertex) async throws -> Stack {
        try await stackTask(vertex).value
    }

    /// The task computing the vertex's result, started when first asked for.
    func stackTask(_ vertex: Vertex) -> Task<Stack, Error> {
        stacks.insertIfAbsent(vertex.digest, Task(executorPreference: SolverExecutor.shared) { try await self.computeStack(vertex) })
    }

    private func computeStack(_ vertex: Vertex) async throws -> Stack {
        switch vertex.op {
        case .source(.scratch):
            if !vertex.name.isEmpty { reporter.start(vertex.name).finish() }
            return Stack()
        case .source(.image(let reference, let manifest, _)):
            let step = vertex.name.isEmpty ? nil : reporter.start(vertex.name)
            defer { step?.finish() }
            return try located(vertex) {
                let m = try decodeJSON(Manifest.self, from: try store.content.read(manifest), what: "manifest of \(reference)")
                let config = try store.config(of: m)
                try config.checkDiffIDCount(layers: m.layers.count, "\(reference): manifest \(manifest)")
                return Stack(layers: m.layers, diffIDs: config.rootfs.diff_ids)
            }
        case .source:
            throw SolveError("internal: a \(vertex.op) source has no root of its own; copy from it")
        case .exec, .file:
            let key = try await cacheKey(vertex)
            if !vertex.ignoreCache, let hit = try cache.lookup(key), hit.layer.map({ store.content.contains($0.digest) }) ?? true {
                try? cache.markUsed(key)
                let base = try await stack(vertex.inputs[0])
                let step = reporter.start(vertex.name)
                step.cached()
                step.finish()
                return base.adding(hit, snapshot: nil)
            }
            // An imported cache's record, when it continues this build's input: CACHED as a
            // local hit is; its layer is fetched only when something needs its files.
            if !vertex.ignoreCache, let imports, imports.record(key) != nil {
                let base = try await stack(vertex.inputs[0])
                if let hit = try imports.result(for: key, on: base) {
                    let step = reporter.start(vertex.name)
                    step.cached()
                    step.finish()
                    return base.adding(hit, snapshot: nil)
                }
            }
            // Every input at once (a COPY --from's stage alongside the chain below it), then wait.
            let needed = vertex.inputs.enumerated().filter { $0.offset == 0 || !$0.element.readsFilesDirectly }
            let tasks = needed.map { (index: $0.offset, task: stackTask($0.element)) }
            var sources: [Int: Stack] = [:]
            for (i, t) in tasks { sources[i] = try await t.value }
            let base = sources.removeValue(forKey: 0)!
            let inputs = sources
            let step = reporter.start(vertex.name)
            do {
                try Task.checkCancellation()
                let ran = Flag()
                let (result, made) = try await blocking { [self] () throws -> (CachedResult, Snapshot?) in
                    try interruption()
                    var made: Snapshot?
                    let result = try steps.run(key) {
                        ran.set()
                        let root = try materialise(base)
                        var materialised: [Int: Snapshot] = [:]
                        for (i, s) in inputs { materialised[i] = try materialise(s) }
                        let (r, snap) = try located(vertex) { try execute(vertex, on: root, sources: materialised, step: step) }
                        try cache.store(key, r, description: vertex.name)
                        made = snap
                        return r
                    }
                    return (result, made)
                }
                if !ran.isSet { step.cached() }
                step.finish()
                return base.adding(result, snapshot: made)
            } catch {
                step.fail("\(error)")
                throw error
            }
        }
    }

    /// The snapshot of a stack: each layer applied once (shared by every stack that has it).
    func materialise(_ s: Stack) throws -> Snapshot {
        if let snap = s.snapshot { return snap }
        var snap = Snapshot(chainID: nil, directories: [])
        for (layer, diffID) in zip(s.layers, s.diffIDs) {
            let local = try localLayer(layer)
            snap = try snapshotter.apply(layer: store.content.blob(local), diffID: diffID, name: layer.digest.description, on: snap)
        }
        return snap
    }

    /// A stack's layer as the content store has it: one taken from an imported cache is fetched
    /// first (its size is unknown until then).
    func localLayer(_ layer: Descriptor) throws -> Descriptor {
        if layer.size >= 0 || imports == nil { return layer }
        return try imports!.localLayer(layer)
    }

    /// `stacks` with every layer in the content store: what an image's manifest and its exports
    /// need. Layers of imported caches are fetched here (the intermediate stages' stay where they
    /// are unless a step needed their files).
    public func localised(_ stacks: [Stack]) async throws -> [Stack] {
        guard imports != nil, stacks.contains(where: { $0.layers.contains { $0.size < 0 } }) else { return stacks }
        return try await blocking { [self] in
            try stacks.map { s in
                var out = s
                out.layers = try s.layers.map { try localLayer($0) }
                return out
            }
        }
    }

    /// Runs `work` on a thread of its own, at most `parallelism` such at once.
    package func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            let slots = self.slots
            Thread.detachNewThread {
                slots.wait()
                defer { slots.signal() }
                c.resume(with: Result { try work() })
            }
        }
    }

    /// Errors of the vertex's work, located at its instruction.
    func located<T>(_ vertex: Vertex, _ work: () throws -> T) throws -> T {
        do {
            return try work()
        } catch let e as BuildError {
            throw e
        } catch {
            guard let o = vertex.origin else { throw error }
            throw BuildError(file: o.file, line: o.line, instruction: o.instruction, message: "\(error)")
        }
    }

    // MARK: - Downloads

    struct Download: Sendable {
        let staging: LayerStaging
        let name: String
        let digest: Digest
    }

    func download(_ vertex: Vertex) async throws -> Download {
        guard case .source(.http(let url, let checksum)) = vertex.op else { throw SolveError("internal: not a download") }
        let task = fetching.insertIfAbsent(vertex.digest, Task(executorPreference: SolverExecutor.shared) {
            let d = try await self.blocking { [self] in
                let staging = try LayerStaging(in: tmpRoot)
                let (name, digest) = try locatedSource(vertex) { try fetch(url, into: staging, checksum: checksum) }
                return Download(staging: staging, name: name, digest: digest)
            }
            self.fetched.set(vertex.digest, d)
            return d
        })
        return try await task.value
    }

    // MARK: - Git

    /// The commit a git source's ref names (`git ls-remote`, once per solve): its key's content.
    public func resolveGit(_ vertex: Vertex) async throws -> GitResolved {
        guard case .source(.git(let source)) = vertex.op else { throw SolveError("internal: not a git source") }
        let task = resolving.insertIfAbsent(vertex.digest, Task(executorPreference: SolverExecutor.shared) {
            let r = try await self.blocking { [self] in try locatedSource(vertex) { try gits.resolve(source) } }
            self.resolved.set(vertex.digest, r)
            return r
        })
        return try await task.value
    }

    /// The directory holding a git source's checkout (fetched first when the state dir's
    /// repository lacks the commit), made once per solve; its subdir is the caller's to apply.
    func gitCheckout(_ vertex: Vertex) throws -> String {
        guard case .source(.git(let source)) = vertex.op, let r = resolved[vertex.digest] else {
            throw SolveError("internal: \(vertex) was not resolved")
        }
        // One checkout at a time in this process (processes wait on the repository's lock).
        return try checkouts.withLock { done in
            if let s = done[vertex.digest] { return s.dir + "/tree" }
            let staging = try LayerStaging(in: tmpRoot)
            guard mkdirat(staging.fd, "tree", 0o755) == 0 else { throw SystemError("mkdir", path: staging.dir + "/tree") }
            try locatedSource(vertex) { try gits.checkout(source, r, into: staging.dir + "/tree") }
            done[vertex.digest] = staging
            return staging.dir + "/tree"
        }
    }

    /// Errors of a source's work: at its instruction, else named by the source's name
    /// (`--build-context NAME`).
    func locatedSource<T>(_ vertex: Vertex, _ work: () throws -> T) throws -> T {
        do {
            return try located(vertex, work)
        } catch let e as SolveError where vertex.origin == nil && !vertex.name.isEmpty {
            throw SolveError("\(vertex.name): \(e.message)")
        }
    }

    /// A download already made (while its key was computed: it is the key's content).
    func downloaded(_ vertex: Vertex) throws -> Download {
        guard let d = fetched[vertex.digest] else { throw SolveError("internal: \(vertex) was not downloaded") }
        return d
    }
}

extension Vertex {
    /// What this vertex's op reads from its local-directory input `i`: the paths, and how
    /// messages name the reader and the directory. Only those files are in its key.
    func localReads(input i: Int) -> (paths: [String], keyword: String, what: String) {
        switch op {
        case .file(.copy(let c)):
            return (c.sources.filter { $0.input == i }.flatMap(\.paths), c.keyword, c.sources.first { $0.input == i }?.what ?? "build context")
        case .exec(let e):
            return (e.mounts.compactMap { m in m.input.flatMap { $0.index == i ? $0.source : nil } }, "RUN --mount", "build context")
        default:
            return (["."], "", "build context")
        }
    }

    /// A source whose files a copy reads where they are (no stack of layers).
    var readsFilesDirectly: Bool {
        if case .source(.local) = op { return true }
        if case .source(.inline) = op { return true }
        if case .source(.http) = op { return true }
        if case .source(.git) = op { return true }
        return false
    }
}

/// Set once, read after.
final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// After SIGINT or SIGTERM (with `Sandbox.killSandboxesOnInterrupt`), no new step starts.
package func interruption() throws {
    if Sandbox.interruptedBy != 0 { throw SolveError("interrupted (signal \(Sandbox.interruptedBy))") }
}
