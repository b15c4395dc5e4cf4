import Foundation

/// Builds images from Dockerfiles in one state directory: the embedding API behind `rbuild build`.
/// Each stage runs on its own thread as soon as the stages it uses are done; a stage the target
/// does not need never runs. Every step that changes files has a cache key (see `CacheKey`)
/// looked up in the state dir's cache index before it runs; identical steps in stages built at
/// once run once.
public final class Builder: @unchecked Sendable {
    public let store: ImageStore
    public let snapshotter: any Snapshotter
    let cache: CacheIndex
    let steps = InFlight<CachedResult>()
    /// Base images pulled in this process (each once, however many stages name it).
    let pulls = InFlight<Descriptor>()

    /// `stateDirectory` nil: the default (`$XDG_DATA_HOME/rbuild`); `snapshotter` nil: the first
    /// kind that works here.
    public init(stateDirectory: String? = nil, snapshotter kind: SnapshotterKind? = nil) throws {
        store = try StateDirectory.open(stateDirectory)
        let tasks = SandboxTasks()
        snapshotter = try Snapshotters.make(try Snapshotters.choose(kind, tasks: tasks).kind, stateDirectory: store.root, tasks: tasks)
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

    /// Builds the target stage and stores its config and manifest; exporting is up to the caller.
    public func build(_ options: BuildOptions) throws -> BuiltImage {
        let session = try BuildSession(builder: self, options: options)
        return try session.run()
    }

    /// Builds the target for every platform of `options.platforms` (else `platform`, else the
    /// host's) at once, in the order given. Work that comes out the same for several platforms —
    /// a `FROM --platform=$BUILDPLATFORM` stage that does not use the TARGET* args — has the same
    /// keys, so it runs once. A platform whose RUN steps cannot run here (no qemu, no binfmt)
    /// fails the build before anything runs.
    public func build(platforms options: BuildOptions) throws -> [BuiltImage] {
        let platforms = options.platforms.isEmpty ? [options.platform ?? Platform.host] : options.platforms
        var seen = Set<String>()
        for p in platforms where !seen.insert(p.description).inserted {
            throw BuildFailure("--platform lists \(p) twice")
        }
        let reporter = options.reporter ?? ProgressReporter(sink: options.progress)
        var sessions: [BuildSession] = []
        for (i, p) in platforms.enumerated() {
            var o = options
            o.platform = p
            o.reporter = reporter
            o.label = platforms.count > 1 ? p.description : nil
            sessions.append(try BuildSession(builder: self, options: o, quiet: i > 0))
        }
        for s in sessions { try s.checkEmulation() }
        if sessions.count == 1 { return [try sessions[0].run()] }
        final class Results: @unchecked Sendable {
            var images: [Int: BuiltImage] = [:]
            let lock = NSLock()
        }
        let results = Results()
        try Scheduler(parallelism: sessions.count).run(sessions.enumerated().map { i, s in
            Scheduler.Job(name: String(i), dependencies: []) {
                let image = try s.run()
                results.lock.lock()
                results.images[i] = image
                results.lock.unlock()
            }
        })
        return try (0..<sessions.count).map { i in
            guard let image = results.images[i] else { throw BuildFailure("internal: no image for \(platforms[i])") }
            return image
        }
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

/// The state of a stage as its instructions are evaluated.
struct StageState {
    var key: Digest
    var layers: [Descriptor] = []
    var diffIDs: [Digest] = []
    /// The snapshot of the first `appliedCount` layers.
    var applied = Snapshot(chainID: nil, directories: [])
    var appliedCount = 0
    var image: ImageConfig
    var scope: StageScope
    var shell = ["/bin/sh", "-c"]
    var platform: Platform

    var config: ImageConfig.Config {
        get { image.config ?? ImageConfig.Config() }
        set { image.config = newValue }
    }
}

/// One build: the definition, the stages' results as they finish, the progress numbering.
final class BuildSession: @unchecked Sendable {
    let builder: Builder
    let options: BuildOptions
    let definition: BuildDefinition
    let dockerfile: Dockerfile
    let global: GlobalScope
    let context: ExpansionContext
    let reporter: ProgressReporter
    let hasher: ContextHasher?
    let ignore: DockerIgnore
    let lexer: ShellLexer
    let platform: Platform
    private var results: [Int: StageState] = [:]
    private let lock = NSLock()

    var store: ImageStore { builder.store }
    var snapshotter: any Snapshotter { builder.snapshotter }

    init(builder: Builder, options: BuildOptions, quiet: Bool = false) throws {
        self.builder = builder
        self.options = options
        reporter = options.reporter ?? ProgressReporter(sink: options.progress)
        let load = quiet ? nil : reporter.start("[internal] load build definition from \(options.dockerfileName)")
        do {
            dockerfile = try Dockerfile.parse(options.dockerfileText, fileName: options.dockerfileName)
            definition = try dockerfile.definition()
        } catch {
            load?.fail("\(error)")
            throw error
        }
        load?.output("transferring dockerfile: \(options.dockerfileText.utf8.count)B done")
        load?.finish()
        lexer = ShellLexer(escape: dockerfile.escapeToken)
        platform = options.platform ?? Platform.host
        context = ExpansionContext(buildArgs: options.buildArgs, buildPlatform: Platform.host, targetPlatform: platform)
        global = try GlobalScope(definition, context: context, lexer: lexer)
        if let dir = options.contextDirectory {
            var st = stat()
            guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw BuildFailure("the build context \(dir) is not a directory")
            }
            let resolved = URL(fileURLWithPath: dir).standardizedFileURL.resolvingSymlinksInPath().path
            ignore = quiet ? try DockerIgnore.load(contextDirectory: resolved, dockerfilePath: options.dockerfilePath)
                : try reporter.step("[internal] load .dockerignore") { _ in
                    try DockerIgnore.load(contextDirectory: resolved, dockerfilePath: options.dockerfilePath)
                }
            hasher = ContextHasher(root: resolved, index: builder.cache)
        } else {
            ignore = DockerIgnore("")
            hasher = nil
        }
    }

    // MARK: - Stages

    func stageIndex(named name: String, before limit: Int) -> Int? {
        if let i = Int(name), i >= 0, i < limit, String(i) == name { return i }
        return definition.stages[..<limit].lastIndex { $0.from.stageName?.lowercased() == name.lowercased() }
    }

    /// The stages `stage` needs first: its FROM, and COPY --from naming a stage.
    func dependencies(of stage: Stage) -> [Int] {
        var out: [Int] = []
        let base = (try? lexer.expand(stage.from.image, env: { self.global.lookup($0) }).word) ?? stage.from.image
        if let i = stageIndex(named: base, before: stage.index) { out.append(i) }
        for located in stage.instructions {
            switch located.instruction {
            case .copy(let c), .add(let c):
                if let from = c.from, let i = stageIndex(named: from, before: stage.index) { out.append(i) }
            default: break
            }
        }
        return out
    }

    /// The stages the target needs, transitively.
    func neededStages() throws -> (target: Stage, needed: Set<Int>) {
        guard let target = definition.stage(named: options.target) else {
            throw BuildFailure("target stage \"\(options.target ?? "")\" could not be found in \(options.dockerfileName)")
        }
        var needed = Set<Int>(), queue = [target.index]
        while let i = queue.popLast() {
            guard needed.insert(i).inserted else { continue }
            queue += dependencies(of: definition.stages[i])
        }
        return (target, needed)
    }

    /// Every platform a needed stage runs RUN steps for can run here — or the error says which
    /// platform lacks what, and how to get it, before anything runs.
    func checkEmulation() throws {
        for i in try neededStages().needed.sorted() {
            let stage = definition.stages[i]
            guard stage.instructions.contains(where: { if case .run = $0.instruction { return true } else { return false } }) else { continue }
            var p = platform
            if let text = stage.from.platform,
               let expanded = try? lexer.expand(text, env: { self.global.lookup($0) }).word, let q = try? Platform(parsing: expanded) {
                p = q
            }
            guard let arch = Architecture(platform: p.description) else {
                throw BuildFailure("platform \(p): rbuild cannot run RUN steps for it (known: \(Architecture.allCases.map(\.platform).joined(separator: ", ")))")
            }
            do {
                _ = try Emulation.mode(for: arch)
            } catch {
                throw BuildFailure("platform \(p) (stage \(stage.reference)): \(error)")
            }
        }
    }

    func run() throws -> BuiltImage {
        let (target, needed) = try neededStages()
        let jobs = needed.sorted().map { i in
            let stage = definition.stages[i]
            return Scheduler.Job(name: String(i), dependencies: dependencies(of: stage).map(String.init)) { [self] in
                let state = try self.evaluate(stage, isTarget: i == target.index)
                self.lock.lock()
                self.results[i] = state
                self.lock.unlock()
            }
        }
        defer { hasher?.save() }
        try Scheduler().run(jobs)
        guard let final = result(target.index) else { throw BuildFailure("internal: the target stage produced nothing") }
        return try finish(final)
    }

    func result(_ i: Int) -> StageState? {
        lock.lock()
        defer { lock.unlock() }
        return results[i]
    }

    /// Writes the config and manifest of a stage's state.
    func finish(_ s: StageState) throws -> BuiltImage {
        var image = s.image
        image.rootfs = ImageConfig.RootFS(diff_ids: s.diffIDs)
        var cfg = s.config
        if !options.labels.isEmpty {
            var labels = cfg.Labels ?? [:]
            for (k, v) in options.labels { labels[k] = v }
            cfg.Labels = labels
        }
        image.config = cfg
        image.created = timestampNow()
        image.architecture = s.platform.architecture
        image.os = s.platform.os
        image.variant = s.platform.variant
        let configBytes = try canonicalJSON(image)
        let configDigest = try store.content.put(configBytes)
        let manifest = Manifest(mediaType: MediaType.ociManifest,
                                config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                layers: s.layers)
        let bytes = try canonicalJSON(manifest)
        let d = try store.content.put(bytes)
        return BuiltImage(manifest: Descriptor(mediaType: MediaType.ociManifest, digest: d, size: Int64(bytes.count), platform: s.platform),
                          config: image, layers: s.layers, diffIDs: s.diffIDs)
    }

    /// Image and history times: SOURCE_DATE_EPOCH when set, else now.
    func timestampNow() -> String { timestamp(options.layer.sourceDateEpoch) }

    /// How buildx names a stage's steps: `[name 2/5]`, or `[2/5]` for an unnamed target, with
    /// the platform first when several build at once (`[linux/arm64 name 2/5]`).
    func stepName(_ stage: Stage, _ n: Int, isTarget: Bool, _ text: String) -> String {
        let total = stage.instructions.count + 1
        let prefix = [options.label, stage.from.stageName ?? (isTarget ? nil : "stage-\(stage.index)")].compactMap { $0 }.joined(separator: " ")
        return "[\(prefix.isEmpty ? "" : prefix + " ")\(n)/\(total)] \(text)"
    }

    func evaluate(_ stage: Stage, isTarget: Bool) throws -> StageState {
        var state = try from(stage, isTarget: isTarget)
        // ONBUILD triggers of the base image run first, then are not inherited.
        if let triggers = state.config.OnBuild, !triggers.isEmpty {
            state.config.OnBuild = nil
            for t in triggers {
                let df = try Dockerfile.parse(t + "\n", fileName: options.dockerfileName + " (ONBUILD of \(stage.from.image))")
                for node in df.nodes {
                    let instruction = try df.typed(node)
                    try execute(Located(instruction: instruction, node: node), stage: stage, name: "ONBUILD " + node.original,
                                state: &state)
                }
            }
        }
        for (i, located) in stage.instructions.enumerated() {
            try execute(located, stage: stage, name: stepName(stage, i + 2, isTarget: isTarget, located.node.original), state: &state)
        }
        return state
    }

    func locate(_ node: Node, _ error: Error) -> Error {
        if error is BuildError || error is DockerfileError { return error }
        return BuildError(file: options.dockerfileName, line: node.range.startLine, instruction: node.original, message: "\(error)")
    }

    // MARK: - FROM

    func from(_ stage: Stage, isTarget: Bool) throws -> StageState {
        let node = stage.fromNode
        do {
            let name = try lexer.expand(stage.from.image, env: { self.global.lookup($0) }).word
            var stagePlatform = platform
            if let p = stage.from.platform {
                let text = try lexer.expand(p, env: { self.global.lookup($0) }).word
                stagePlatform = try Platform(parsing: text)
            }
            let scopeFor = { (env: [String]) in
                StageScope(baseEnv: env.map { kv in
                    let parts = kv.split(separator: "=", maxSplits: 1).map(String.init)
                    return (parts[0], parts.count > 1 ? parts[1] : "")
                }, global: self.global, context: self.context)
            }
            if let i = stageIndex(named: name, before: stage.index) {
                guard var base = result(i) else { throw BuildFailure("internal: stage \(name) has not been built") }
                base.scope = scopeFor(base.config.Env ?? [])
                // The base's key as it is (no stage name in it): the same step on the same base
                // in two stages is one step, run once.
                return base
            }
            let step = reporter.start(stepName(stage, 1, isTarget: isTarget, "FROM " + name))
            defer { step.finish() }
            if name.lowercased() == "scratch" {
                let image = ImageConfig(created: nil, author: nil, architecture: stagePlatform.architecture, os: stagePlatform.os,
                                        variant: stagePlatform.variant, config: ImageConfig.Config(),
                                        rootfs: ImageConfig.RootFS(diff_ids: []), history: [])
                var key = CacheKey(parent: nil)
                key.add("from", "scratch")
                key.add("platform", stagePlatform.description)
                return StageState(key: key.digest, image: image, scope: scopeFor([]), platform: stagePlatform)
            }
            let (manifestDigest, manifest, image) = try resolveImage(name, platform: stagePlatform)
            var key = CacheKey(parent: nil)
            key.add("from", manifestDigest.description)
            var state = StageState(key: key.digest, layers: manifest.layers, diffIDs: image.rootfs.diff_ids,
                                   image: image, scope: scopeFor(image.config?.Env ?? []), platform: image.platform)
            if let shell = image.config?.Shell, !shell.isEmpty { state.shell = shell }
            if state.config.Env == nil { state.config.Env = ["PATH=" + Sandbox.defaultPath] }
            return state
        } catch {
            throw locate(node, error)
        }
    }

    /// An image by name: a named build context, `oci-layout://DIR[:TAG]`, then the local store.
    func resolveImage(_ name: String, platform: Platform) throws -> (Digest, Manifest, ImageConfig) {
        var ref = name
        if let ctx = options.buildContexts[name] {
            if ctx.hasPrefix("docker-image://") {
                ref = String(ctx.dropFirst("docker-image://".count))
            } else if ctx.hasPrefix("oci-layout://") {
                ref = ctx
            } else {
                return try directoryImage(ctx, platform: platform)
            }
        }
        let top: Descriptor
        if ref.hasPrefix("oci-layout://") {
            top = try importLayout(String(ref.dropFirst("oci-layout://".count)))
        } else if !options.pull, let d = try store.lookup(ref) {
            top = d
        } else {
            // Not here (or --pull): the registry, for this platform.
            let reference = try Reference(parsing: ref)
            do {
                top = try builder.pulls.run(CacheKey.of(["pull", reference.description, platform.description])) {
                    try reporter.step("[internal] pull \(reference) (\(platform))") { step in
                        try Distribution.pull(reference, platforms: [platform], store: store) { step.output($0) }
                    }
                }
            } catch {
                let local = options.pull ? "" : "\(ref) is not in the local store (\(store.root); `rbuild images` lists it, `rbuild load`/`import` add to it, `--build-context \(name)=oci-layout://DIR` uses a layout), and "
                throw BuildFailure(local + "pulling \(reference) failed: \(error)")
            }
        }
        let (desc, manifest) = try store.manifest(of: top, platform: platform)
        let image = try decodeJSON(ImageConfig.self, from: try store.content.read(manifest.config), what: "config of \(ref)")
        guard manifest.layers.count == image.rootfs.diff_ids.count else {
            throw BuildFailure("\(ref): its manifest lists \(manifest.layers.count) layers but its config \(image.rootfs.diff_ids.count) diff_ids")
        }
        return (desc.digest, manifest, image)
    }

    /// A directory named as a build context and used as FROM: its files as one layer.
    func directoryImage(_ dir: String, platform: Platform) throws -> (Digest, Manifest, ImageConfig) {
        var opts = layerOptions
        let uid = getuid(), gid = getgid()
        opts.ownership = { u, g in (u == uid ? 0 : u, g == gid ? 0 : g) }
        let d = try importDirectory(dir, platform: platform, store: store, options: opts)
        let manifest = try decodeJSON(Manifest.self, from: try store.content.read(d), what: "manifest of \(dir)")
        let image = try decodeJSON(ImageConfig.self, from: try store.content.read(manifest.config), what: "config of \(dir)")
        return (d.digest, manifest, image)
    }

    /// `oci-layout://DIR[:TAG|@sha256:…]`: the layout's image checked and stored (as `rbuild
    /// load` does, without naming it); its entry for TAG or the digest, else `latest` (buildx).
    func importLayout(_ spec: String) throws -> Descriptor {
        var dir = spec, tag: String?, digest: Digest?
        do {
            if let at = spec.range(of: "@sha256:", options: .backwards) {
                dir = String(spec[..<at.lowerBound])
                digest = try Digest(parsing: String(spec[spec.index(after: at.lowerBound)...]))
            } else if let colon = spec.lastIndex(of: ":"), !spec[colon...].contains("/") {
                dir = String(spec[..<colon])
                tag = String(spec[spec.index(after: colon)...])
            }
            return try store.ingest(path: dir, tag: tag, digest: digest)
        } catch {
            throw BuildFailure("oci-layout://\(spec): \(error)")
        }
    }

    // MARK: - Instructions

    func expand(_ text: String, _ state: StageState) throws -> String {
        let scope = state.scope
        return try lexer.expand(text, env: { scope.lookup($0) }).word
    }

    func history(_ state: inout StageState, _ createdBy: String, empty: Bool) {
        var h = state.image.history ?? []
        h.append(ImageConfig.History(created: timestampNow(), created_by: createdBy, comment: empty ? nil : "buildkit.dockerfile.v0",
                                     empty_layer: empty ? true : nil))
        state.image.history = h
    }

    /// A metadata instruction: the config changes, the key chain does not. As in BuildKit, a
    /// LABEL, CMD, EXPOSE… edit keeps every later step cached; what a later step does depend on
    /// (its environment, user, working directory, shell) is in that step's own key.
    func meta(_ state: inout StageState, _ text: String) {
        history(&state, text, empty: true)
    }

    func execute(_ located: Located, stage: Stage, name: String, state: inout StageState) throws {
        let node = located.node
        do {
            try interruption()
            switch located.instruction {
            case .from:
                throw BuildFailure("FROM inside a stage")
            case .arg(let decls):
                for d in decls { try state.scope.declare(d, lexer: lexer) }
            case .env(let pairs):
                var text: [String] = []
                for p in pairs {
                    let value = try expand(p.value, state)
                    state.scope.setEnv(p.key, value)
                    text.append("\(p.key)=\(value)")
                }
                state.config.Env = state.scope.env.map { "\($0.key)=\($0.value)" }
                meta(&state, "ENV " + text.joined(separator: " "))
            case .label(let pairs):
                var labels = state.config.Labels ?? [:]
                var text: [String] = []
                for p in pairs {
                    let k = try expand(p.key, state), v = try expand(p.value, state)
                    labels[k] = v
                    text.append("\(k)=\(v)")
                }
                state.config.Labels = labels
                meta(&state, "LABEL " + text.joined(separator: " "))
            case .expose(let ports):
                var exposed = state.config.ExposedPorts ?? [:]
                for p in ports {
                    for word in try expand(p, state).split(separator: " ") {
                        let port = word.contains("/") ? String(word) : word + "/tcp"
                        exposed[port.lowercased()] = EmptyObject()
                    }
                }
                state.config.ExposedPorts = exposed
                meta(&state, "EXPOSE " + ports.joined(separator: " "))
            case .volume(let paths):
                var volumes = state.config.Volumes ?? [:]
                for p in paths { volumes[try expand(p, state)] = EmptyObject() }
                state.config.Volumes = volumes
                meta(&state, "VOLUME " + paths.joined(separator: " "))
            case .user(let u):
                state.config.User = try expand(u, state)
                meta(&state, "USER " + (state.config.User ?? ""))
            case .workdir(let w):
                try workdir(try expand(w, state), name: name, stage: stage, state: &state)
            case .stopSignal(let s):
                state.config.StopSignal = try expand(s, state)
                meta(&state, "STOPSIGNAL " + (state.config.StopSignal ?? ""))
            case .maintainer(let m):
                state.image.author = m
                meta(&state, "MAINTAINER " + m)
            case .shell(let words):
                state.shell = words
                state.config.Shell = words
                meta(&state, "SHELL " + words.description)
            case .cmd(let form):
                state.config.Cmd = commandArgv(form, state)
                meta(&state, "CMD " + (state.config.Cmd ?? []).description)
            case .entrypoint(let form):
                state.config.Entrypoint = commandArgv(form, state)
                // ENTRYPOINT resets a CMD inherited from the base image or set earlier.
                state.config.Cmd = nil
                meta(&state, "ENTRYPOINT " + (state.config.Entrypoint ?? []).description)
            case .healthcheck(let h):
                var hc = ImageConfig.HealthConfig()
                if let test = h.test {
                    switch test {
                    case .exec(let argv): hc.Test = ["CMD"] + argv
                    case .shell(let cmd): hc.Test = ["CMD-SHELL", cmd]
                    }
                    func ns(_ d: Duration?) -> Int64? {
                        d.map { $0.components.seconds * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
                    }
                    hc.Interval = ns(h.interval)
                    hc.Timeout = ns(h.timeout)
                    hc.StartPeriod = ns(h.startPeriod)
                    hc.StartInterval = ns(h.startInterval)
                    hc.Retries = h.retries
                } else {
                    hc.Test = ["NONE"]
                }
                state.config.Healthcheck = hc
                meta(&state, "HEALTHCHECK " + (hc.Test ?? []).description)
            case .onbuild(_, let source):
                var triggers = state.config.OnBuild ?? []
                triggers.append(source)
                state.config.OnBuild = triggers
                meta(&state, "ONBUILD " + source)
            case .run(let r):
                try run(r, node: node, name: name, stage: stage, state: &state)
            case .copy(let c):
                try copy(c, isAdd: false, node: node, name: name, stage: stage, state: &state)
            case .add(let c):
                try copy(c, isAdd: true, node: node, name: name, stage: stage, state: &state)
            }
        } catch {
            throw locate(node, error)
        }
    }

    func commandArgv(_ form: CommandForm, _ state: StageState) -> [String] {
        switch form {
        case .exec(let argv): return argv
        case .shell(let cmd): return state.shell + [cmd]
        }
    }

    func noCache(_ stage: Stage) -> Bool {
        options.noCache || options.noCacheFilter.contains { f in
            f.lowercased() == stage.from.stageName?.lowercased() || f == String(stage.index)
        }
    }

    /// Looks `key` up unless the stage skips the cache; otherwise runs `work` (once per process
    /// for one key) and records its result.
    func cached(_ key: Digest, stage: Stage, step: ProgressReporter.Step, _ work: () throws -> CachedResult) throws -> (CachedResult, hit: Bool) {
        if !noCache(stage), let hit = try builder.cache.lookup(key),
           hit.layer.map({ store.content.contains($0.digest) }) ?? true {
            step.cached()
            return (hit, true)
        }
        var ran = false
        let result = try builder.steps.run(key) {
            ran = true
            let r = try work()
            try builder.cache.store(key, r)
            return r
        }
        if !ran { step.cached() }
        return (result, false)
    }

    /// Adds a step's layer (if it made one) to the stage.
    func append(_ result: CachedResult, _ state: inout StageState, createdBy: String, snapshot: Snapshot? = nil) {
        if let layer = result.layer, let diffID = result.diffID {
            state.layers.append(layer)
            state.diffIDs.append(diffID)
            if let snapshot, state.appliedCount == state.layers.count - 1 {
                state.applied = snapshot
                state.appliedCount = state.layers.count
            }
        }
        history(&state, createdBy, empty: result.layer == nil)
    }

    /// The stage's root as a snapshot, every layer so far applied.
    func materialise(_ state: inout StageState) throws -> Snapshot {
        while state.appliedCount < state.layers.count {
            let i = state.appliedCount
            state.applied = try snapshotter.apply(layer: store.content.blob(state.layers[i]), diffID: state.diffIDs[i],
                                                  name: state.layers[i].digest.description, on: state.applied)
            state.appliedCount += 1
        }
        return state.applied
    }

    /// Layers are made uncompressed (fast to write, cheap to unpack); exporters compress them
    /// as each output asks (`Builder.exportable`), once per layer and compression.
    var layerOptions: LayerOptions {
        var o = options.layer
        o.compression = .none
        o.level = nil
        return o
    }

    /// What of the layer options changes a layer's bytes: SOURCE_DATE_EPOCH.
    var layerKey: String { "epoch:\(options.layer.sourceDateEpoch ?? -1)" }
}

/// A build failure that is not tied to one Dockerfile line (or gets its line from the caller).
public struct BuildFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

/// After SIGINT or SIGTERM (with `Sandbox.killSandboxesOnInterrupt`), no new step starts.
func interruption() throws {
    if Sandbox.interruptedBy != 0 { throw BuildFailure("interrupted (signal \(Sandbox.interruptedBy))") }
}
