import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSolver
import RBuildSystem

/// What a lowering needs besides the Dockerfile: the build's arguments, platforms and contexts.
public struct LoweringOptions: Sendable {
    public var buildArgs: [String: String] = [:]
    /// The stage to build (`--target`); nil: the last.
    public var target: String?
    /// The platform built for (TARGETPLATFORM); stages without `--platform` use it.
    public var platform: Platform
    public var buildPlatform: Platform = .host
    /// `--build-context name=value`: a directory, `docker-image://REF`, `oci-layout://DIR[:TAG]`,
    /// a git URL or an http(s) URL of a tarball.
    public var buildContexts: [String: String] = [:]
    /// Named contexts that are another build's result, lowered into the same graph by the caller
    /// (bake's `target:OTHER`): used as an earlier stage of this Dockerfile would be.
    public var stageContexts: [String: LoweredStage] = [:]
    /// The build context directory (symlinks resolved); nil: the build has none.
    public var contextDirectory: String?
    /// The context's .dockerignore.
    public var ignore = DockerIgnore("")
    public var noCache = false
    /// Stages (by name or index) whose steps skip the cache.
    public var noCacheFilter: [String] = []
    /// Put before step names when several platforms build at once (`[linux/arm64 build 2/5]`).
    public var label: String?
    /// The `created` time of the history entries (SOURCE_DATE_EPOCH or now).
    public var created: String?
    /// The network of RUN steps without `--network` (or with `--network=default`): buildx's
    /// `--network`. A network namespace of their own unless told otherwise.
    public var network: NetworkMode = .isolated
    /// `--add-host`: /etc/hosts entries of every RUN step.
    public var extraHosts: [ExtraHost] = []
    /// `--shm-size` and `--ulimit` of every RUN step.
    public var shmSize: Int64?
    public var ulimits: [Ulimit] = []

    public init(platform: Platform) { self.platform = platform }
}

/// One entry the Dockerfile adds to the image's history: the vertex that wrote its layer, or nil
/// for a config-only instruction (an empty layer). Whether a vertex wrote one is known after
/// solving.
public struct HistoryStep: Sendable {
    public var createdBy: String
    public var created: String?
    public var comment: String?
    public var vertex: Vertex?
}

/// A stage lowered: the vertex of its root, and the image config the instructions leave (its
/// history that of the base; `steps` follow it).
public struct LoweredStage: Sendable {
    public var root: Vertex
    public var image: ImageConfig
    public var steps: [HistoryStep]
    public var platform: Platform
    var scope: StageScope
    var shell: [String]

    var config: ImageConfig.Config {
        get { image.config ?? ImageConfig.Config() }
        set { image.config = newValue }
    }
}

/// A failure of the lowering that no instruction is to blame for (`--target` names no stage).
public struct LoweringError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

extension Dockerfile {
    /// Lowers the target stage (and the stages it uses) to vertices in `graph`: ARG/ENV scopes,
    /// heredocs, ONBUILD triggers and FROM expansion are settled here; the solver sees ops only.
    /// Images named by FROM and COPY --from are resolved (for their config and manifest digest)
    /// through `resolver`. Config-only instructions change the image config, never the graph.
    /// `definition`: this Dockerfile's, when the caller has it already (several platforms
    /// lower one definition).
    public func lower(_ options: LoweringOptions, definition: BuildDefinition? = nil, graph: Graph,
                      resolver: any ImageResolving) throws -> LoweredStage {
        try Lowering(self, definition: try definition ?? self.definition(), options: options, graph: graph, resolver: resolver)
            .lowerTarget()
    }
}

/// One lowering: the definition, the stages lowered so far.
final class Lowering {
    let dockerfile: Dockerfile
    let definition: BuildDefinition
    let options: LoweringOptions
    let graph: Graph
    let resolver: any ImageResolving
    let lexer: ShellLexer
    let global: GlobalScope
    let context: ExpansionContext
    var stages: [Int: LoweredStage] = [:]
    var targetIndex = -1
    var contextVertex: Vertex?

    init(_ dockerfile: Dockerfile, definition: BuildDefinition, options: LoweringOptions, graph: Graph,
         resolver: any ImageResolving) throws {
        self.dockerfile = dockerfile
        self.definition = definition
        self.options = options
        self.graph = graph
        self.resolver = resolver
        lexer = ShellLexer(escape: dockerfile.escapeToken)
        context = ExpansionContext(buildArgs: options.buildArgs, buildPlatform: options.buildPlatform, targetPlatform: options.platform)
        global = try GlobalScope(definition, context: context, lexer: lexer)
    }

    var fileName: String { dockerfile.fileName }

    func lowerTarget() throws -> LoweredStage {
        guard let target = definition.stage(named: options.target) else {
            throw LoweringError("target stage \"\(options.target ?? "")\" could not be found in \(fileName)")
        }
        targetIndex = target.index
        return try stage(target.index)
    }

    func stage(_ i: Int) throws -> LoweredStage {
        if let s = stages[i] { return s }
        let s = try lower(definition.stages[i])
        stages[i] = s
        return s
    }

    func stageIndex(named name: String, before limit: Int) -> Int? {
        if let i = Int(name), i >= 0, i < limit, String(i) == name { return i }
        return definition.stages[..<limit].lastIndex { $0.from.stageName?.lowercased() == name.lowercased() }
    }

    /// How buildx names a stage's steps: `[name 2/5]`, or `[2/5]` for an unnamed target, with
    /// the platform first when several build at once (`[linux/arm64 name 2/5]`).
    func stepName(_ stage: Stage, _ n: Int, _ text: String) -> String {
        let total = stage.instructions.count + 1
        let prefix = [options.label, stage.from.stageName ?? (stage.index == targetIndex ? nil : "stage-\(stage.index)")]
            .compactMap { $0 }.joined(separator: " ")
        return "[\(prefix.isEmpty ? "" : prefix + " ")\(n)/\(total)] \(text)"
    }

    func ignoresCache(_ stage: Stage) -> Bool {
        options.noCache || options.noCacheFilter.contains { f in
            f.lowercased() == stage.from.stageName?.lowercased() || f == String(stage.index)
        }
    }

    func locate(_ node: Node, _ error: Error) -> Error {
        if error is BuildError || error is DockerfileError { return error }
        return BuildError(file: fileName, line: node.range.startLine, instruction: node.original, message: "\(error)")
    }

    func origin(_ node: Node) -> Origin {
        Origin(file: fileName, line: node.range.startLine, instruction: node.original)
    }

    func lower(_ stage: Stage) throws -> LoweredStage {
        var state = try from(stage)
        // ONBUILD triggers of the base image run first, then are not inherited.
        if let triggers = state.config.OnBuild, !triggers.isEmpty {
            state.config.OnBuild = nil
            for t in triggers {
                let df = try Dockerfile.parse(t + "\n", fileName: fileName + " (ONBUILD of \(stage.from.image))")
                for node in df.nodes {
                    let instruction = try df.typed(node)
                    try lower(Located(instruction: instruction, node: node), stage: stage, name: "ONBUILD " + node.original, state: &state)
                }
            }
        }
        for (i, located) in stage.instructions.enumerated() {
            try lower(located, stage: stage, name: stepName(stage, i + 2, located.node.original), state: &state)
        }
        return state
    }

    // MARK: - FROM

    func scope(_ env: [String]) -> StageScope {
        StageScope(baseEnv: env.map { kv in
            let parts = kv.split(separator: "=", maxSplits: 1).map(String.init)
            return (parts[0], parts.count > 1 ? parts[1] : "")
        }, global: global, context: context)
    }

    func from(_ stage: Stage) throws -> LoweredStage {
        let node = stage.fromNode
        do {
            let name = try lexer.expand(stage.from.image, env: { self.global.lookup($0) }).word
            var platform = options.platform
            if let p = stage.from.platform {
                platform = try Platform(parsing: try lexer.expand(p, env: { self.global.lookup($0) }).word)
            }
            if let i = stageIndex(named: name, before: stage.index) {
                // The base's root as it is (no stage name in it): the same step on the same base
                // in two stages is one vertex.
                var base = try self.stage(i)
                base.scope = scope(base.config.Env ?? [])
                return base
            }
            let title = stepName(stage, 1, "FROM " + name)
            func empty(_ root: Vertex) -> LoweredStage {
                let image = ImageConfig(created: nil, author: nil, architecture: platform.architecture, os: platform.os,
                                        variant: platform.variant, config: ImageConfig.Config(),
                                        rootfs: ImageConfig.RootFS(diff_ids: []), history: [])
                return LoweredStage(root: root, image: image, steps: [], platform: platform, scope: scope([]), shell: ["/bin/sh", "-c"])
            }
            if name.lowercased() == "scratch" {
                return empty(graph.add(.source(.scratch), name: title, origin: origin(node)))
            }
            var ref = name
            switch try namedContext(name) {
            case .image(let r)?:
                ref = r
            case .stage(let other)?:
                var base = other
                base.scope = scope(base.config.Env ?? [])
                return base
            case .files(let root)?:
                var s = empty(root)
                s.steps.append(HistoryStep(createdBy: "FROM \(name) (build context \(options.buildContexts[name] ?? ""))",
                                           created: options.created, comment: nil, vertex: root))
                return s
            case .directory(let local)?:
                // A directory as a base: its files, owned by root, on an empty root.
                let copy = CopyAction(sources: [CopySource(input: 1, paths: ["."], what: "build context \(name)")],
                                      destination: "/", destinationIsDirectory: true)
                var s = empty(graph.add(.file(.copy(copy)), inputs: [graph.add(.source(.scratch)), local], name: title,
                                        origin: origin(node), ignoreCache: ignoresCache(stage)))
                s.steps.append(HistoryStep(createdBy: "FROM \(name) (build context \(options.buildContexts[name] ?? ""))",
                                           created: options.created, comment: nil, vertex: s.root))
                return s
            case nil:
                break
            }
            let image = try resolver.resolve(ref, platform: platform)
            let root = graph.add(.source(.image(reference: ref, manifest: image.manifest, platform: image.config.platform)),
                                 name: title, origin: origin(node))
            var state = LoweredStage(root: root, image: image.config, steps: [], platform: image.config.platform,
                                     scope: scope(image.config.config?.Env ?? []), shell: ["/bin/sh", "-c"])
            if let shell = image.config.config?.Shell, !shell.isEmpty { state.shell = shell }
            if state.config.Env == nil { state.config.Env = ["PATH=" + Sandbox.defaultPath] }
            return state
        } catch {
            throw locate(node, error)
        }
    }

    enum NamedContext {
        /// Another build's result (`LoweringOptions.stageContexts`).
        case stage(LoweredStage)
        /// The local source of a directory.
        case directory(Vertex)
        /// A root holding the context's files (a git repository, an unpacked tarball).
        case files(Vertex)
        /// An image reference for the resolver (`oci-layout://…` included).
        case image(String)
    }

    /// `--build-context NAME=…`: `docker-image://REF` and other URLs (`oci-layout://DIR`) name
    /// images; a git URL (BuildKit's rules, `github.com/o/r` included) is the repository's files,
    /// an http(s) URL a download, unpacked when it is a tarball (as BuildKit's http context);
    /// anything else is a directory.
    func namedContext(_ name: String) throws -> NamedContext? {
        if let other = options.stageContexts[name] { return .stage(other) }
        guard let value = options.buildContexts[name] else { return nil }
        if value.hasPrefix("docker-image://") { return .image(String(value.dropFirst("docker-image://".count))) }
        let what = "--build-context \(name)"
        func files(_ source: Vertex, _ shown: String, unpack: Bool) -> NamedContext {
            var copy = CopyAction(sources: [CopySource(input: 1, paths: ["/"], what: "build context \(name)")], destination: "/",
                                  destinationIsDirectory: true, unpackArchives: unpack, keyword: what)
            copy.unpackDownloads = unpack
            return .files(graph.add(.file(.copy(copy)), inputs: [graph.add(.source(.scratch)), source],
                                    name: "[context \(name)] \(shown)", ignoreCache: options.noCache))
        }
        if let git = try GitReference.parse(value) {
            let source = try GitSource(git)
            return files(graph.add(.source(.git(source)), name: what), source.display, unpack: false)
        }
        if value.hasPrefix("http://") || value.hasPrefix("https://") {
            return files(graph.add(.source(.http(url: value, checksum: nil)), name: what), value, unpack: true)
        }
        if value.contains("://") { return .image(value) }
        let path = URL(fileURLWithPath: value).standardizedFileURL.resolvingSymlinksInPath().path
        return .directory(graph.add(.source(.local(name: name, path: path, excludes: []))))
    }

    // MARK: - Instructions

    func expand(_ text: String, _ state: LoweredStage) throws -> String {
        let scope = state.scope
        return try lexer.expand(text, env: { scope.lookup($0) }).word
    }

    /// A config-only instruction: the config changes, the graph does not. As in BuildKit, a
    /// LABEL, CMD, EXPOSE… edit keeps every later step cached; what a later step does depend on
    /// (its environment, user, working directory, shell) is in that step's own op.
    func meta(_ state: inout LoweredStage, _ text: String) {
        state.steps.append(HistoryStep(createdBy: text, created: options.created, comment: nil, vertex: nil))
    }

    /// An instruction that changes files: `vertex` on the stage's root becomes the new root.
    func change(_ state: inout LoweredStage, _ vertex: Vertex, _ text: String) {
        state.root = vertex
        state.steps.append(HistoryStep(createdBy: text, created: options.created, comment: "buildkit.dockerfile.v0", vertex: vertex))
    }

    func lower(_ located: Located, stage: Stage, name: String, state: inout LoweredStage) throws {
        let node = located.node
        do {
            switch located.instruction {
            case .from:
                throw LoweringError("FROM inside a stage")
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
                let path = try expand(w, state)
                let current = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
                let dir = cleanPath(path.hasPrefix("/") ? path : current + "/" + path)
                state.config.WorkingDir = dir
                let user = state.config.User.flatMap { $0.isEmpty ? nil : $0 }
                let v = graph.add(.file(.mkdir(path: dir, owner: user)), inputs: [state.root], name: name, origin: origin(node),
                                  ignoreCache: ignoresCache(stage))
                change(&state, v, "WORKDIR " + dir)
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
                state.config.Healthcheck = healthConfig(h)
                meta(&state, "HEALTHCHECK " + (state.config.Healthcheck?.Test ?? []).description)
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

    func healthConfig(_ h: Healthcheck) -> ImageConfig.HealthConfig {
        var hc = ImageConfig.HealthConfig()
        guard let test = h.test else {
            hc.Test = ["NONE"]
            return hc
        }
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
        return hc
    }

    func commandArgv(_ form: CommandForm, _ state: LoweredStage) -> [String] {
        switch form {
        case .exec(let argv): return argv
        case .shell(let cmd): return state.shell + [cmd]
        }
    }

    // MARK: - RUN

    func run(_ r: Run, node: Node, name: String, stage: Stage, state: inout LoweredStage) throws {
        if r.security == "insecure" {
            throw LoweringError("RUN --security=insecure is refused: rbuild runs every step without extra privileges")
        }
        var argv: [String]
        var stdin: [UInt8]?
        var createdBy: String
        switch r.command {
        case .exec(let a):
            guard !a.isEmpty else { throw LoweringError("RUN [] has no command") }
            argv = a
            createdBy = "RUN " + a.description
        case .shell(let text):
            createdBy = "RUN " + (state.shell + [text]).joined(separator: " ")
            if r.heredocs.isEmpty {
                argv = state.shell + [text]
            } else if r.heredocs.count == 1, isLoneHeredoc(text) {
                let script = r.heredocs[0].content
                if script.hasPrefix("#!") {
                    // A script with its own interpreter reads itself from stdin.
                    let first = script.split(separator: "\n", maxSplits: 1).first ?? ""
                    argv = first.dropFirst(2).split(separator: " ").map(String.init) + ["/dev/stdin"]
                    stdin = Array(script.utf8)
                } else {
                    argv = state.shell + [script]
                }
            } else {
                // The shell reads the here-documents itself, as it would from a script.
                var script = text + "\n"
                for h in r.heredocs {
                    script += h.content
                    if !h.content.isEmpty && !h.content.hasSuffix("\n") { script += "\n" }
                    script += h.name + "\n"
                }
                argv = state.shell + [script]
            }
        }
        var env = state.scope.runEnvironment
        if !env.contains(where: { $0.hasPrefix("PATH=") }) { env.insert("PATH=" + Sandbox.defaultPath, at: 0) }
        // `default` is the build's network (buildx's --network), as BuildKit's frontend has it.
        let network: NetworkMode
        switch r.network {
        case nil, "default": network = options.network
        case "none": network = .none
        case "host": network = .host
        case let other?: throw LoweringError("RUN --network=\(other): expected default, none or host")
        }
        let cwd = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        var inputs = [state.root]
        var sshMounts = 0
        let mounts = try r.mounts.map { try mount($0, cwd: cwd, stage: stage, state: state, inputs: &inputs, sshMounts: &sshMounts) }
        var exec = ExecOp(args: argv, env: env, cwd: cwd,
                          user: state.config.User.flatMap { $0.isEmpty ? nil : $0 } ?? "0",
                          network: network, extraHosts: options.extraHosts, platform: state.platform, stdin: stdin, mounts: mounts)
        exec.shmSize = options.shmSize
        exec.ulimits = options.ulimits
        let v = graph.add(.exec(exec), inputs: inputs, name: name, origin: origin(node), ignoreCache: ignoresCache(stage))
        change(&state, v, createdBy + " # buildkit")
    }

    /// One `--mount=` flag: its target made absolute (relative ones are under the working
    /// directory), its `from` (a stage, a named context, an image; else the build context)
    /// added to `inputs`.
    func mount(_ text: String, cwd: String, stage: Stage, state: LoweredStage, inputs: inout [Vertex],
               sshMounts: inout Int) throws -> ExecMount {
        let flag = try RunMountFlag.parse(text) { try self.expand($0, state) }
        func absolute(_ path: String) -> String { cleanPath(path.hasPrefix("/") ? path : cwd + "/" + path) }
        func input(_ from: String?) throws -> Int {
            let v = try mountSource(from, stage: stage, state: state)
            if let i = inputs.firstIndex(of: v) { return i }
            inputs.append(v)
            return inputs.count - 1
        }
        let target = flag.target.map(absolute) ?? ""
        switch flag.type {
        case .bind:
            return ExecMount(.bind(input: try input(flag.from), source: cleanPath("/" + (flag.source ?? "/")),
                                   readWrite: flag.readOnly == false), target: target)
        case .cache:
            var c = CacheMount(id: flag.id.flatMap { $0.isEmpty ? nil : $0 } ?? target)
            c.sharing = flag.sharing ?? .shared
            c.readOnly = flag.readOnly ?? false
            if flag.from != nil { c.from = try input(flag.from) }
            c.source = cleanPath("/" + (flag.source ?? "/"))
            c.mode = flag.mode ?? 0o755
            c.uid = flag.uid
            c.gid = flag.gid
            return ExecMount(.cache(c), target: target)
        case .tmpfs:
            return ExecMount(.tmpfs(size: flag.size), target: target)
        case .secret:
            let id = flag.id.flatMap { $0.isEmpty ? nil : $0 } ?? URL(fileURLWithPath: target).lastPathComponent
            var m = SecretMount(id: id)
            m.env = flag.env
            m.required = flag.required ?? false
            m.owner.mode = flag.mode ?? 0o400
            m.owner.uid = flag.uid ?? 0
            m.owner.gid = flag.gid ?? 0
            // With env= alone the secret is only a variable; otherwise a file too.
            let file = flag.target.map(absolute) ?? (flag.env == nil ? "/run/secrets/" + id : "")
            return ExecMount(.secret(m), target: file)
        case .ssh:
            var m = SSHMount()
            if let id = flag.id, !id.isEmpty { m.id = id }
            m.required = flag.required ?? false
            m.owner.mode = flag.mode ?? 0o600
            m.owner.uid = flag.uid ?? 0
            m.owner.gid = flag.gid ?? 0
            sshMounts += 1
            return ExecMount(.ssh(m), target: flag.target.map(absolute) ?? "/run/buildkit/ssh_agent.\(sshMounts - 1)")
        }
    }

    /// What a mount's `from=` names: an earlier stage, a named context, an image; nil: the
    /// build context.
    func mountSource(_ from: String?, stage: Stage, state: LoweredStage) throws -> Vertex {
        guard let from = try from.map({ try expand($0, state) }), !from.isEmpty else { return try buildContext("RUN --mount") }
        if let i = stageIndex(named: from, before: stage.index) { return try self.stage(i).root }
        var ref = from
        switch try namedContext(from) {
        case .stage(let other)?: return other.root
        case .directory(let local)?: return local
        case .files(let root)?: return root
        case .image(let r)?: ref = r
        case nil: break
        }
        let image = try resolver.resolve(ref, platform: state.platform)
        return graph.add(.source(.image(reference: ref, manifest: image.manifest, platform: image.config.platform)))
    }

    /// The build context's source vertex (one per lowering).
    func buildContext(_ what: String) throws -> Vertex {
        guard let dir = options.contextDirectory else {
            throw LoweringError("\(what): this build has no context (the Dockerfile came from stdin); pass a context directory")
        }
        let ctx = contextVertex ?? graph.add(.source(.local(name: "context", path: dir, excludes: options.ignore.patterns.map(\.line))))
        contextVertex = ctx
        return ctx
    }

    /// `<<EOF`, `<<-EOF`, `<<"EOF"`: a command that is only a here-document.
    func isLoneHeredoc(_ text: String) -> Bool {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard t.hasPrefix("<<") else { return false }
        return !t.dropFirst(2).contains(where: { $0 == " " || $0 == "\t" || $0 == "<" })
    }

    // MARK: - COPY and ADD

    func copy(_ c: FileCopy, isAdd: Bool, node: Node, name: String, stage: Stage, state: inout LoweredStage) throws {
        let kw = isAdd ? "ADD" : "COPY"
        if c.parents { throw LoweringError("\(kw) --parents is not supported yet") }
        let excludes = try c.excludes.map { try expand($0, state) }
        let dest = try expand(c.destination, state)
        let workdir = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let chmod: mode_t? = try c.chmod.map { text in
            guard let m = UInt32(text, radix: 8), m <= 0o7777 else {
                throw LoweringError("\(kw) --chmod=\(text): only octal modes (such as 0755) are supported")
            }
            return mode_t(m)
        }
        let checksumText = try c.checksum.map { try expand($0, state) }
        var inputs = [state.root]
        var sources: [CopySource] = []
        func input(_ v: Vertex) -> Int {
            if let i = inputs.firstIndex(of: v) { return i }
            inputs.append(v)
            return inputs.count - 1
        }
        if !c.heredocs.isEmpty {
            let files = try c.heredocs.map { h in
                InlineFile(name: h.name, content: Array((h.expand ? try expand(h.content, state) : h.content).utf8))
            }
            sources.append(CopySource(input: input(graph.add(.source(.inline(files: files)))), paths: files.map(\.name), what: "here-document"))
        }
        let patterns = try c.sources.filter { !$0.hasPrefix("<<") }.map { try expand($0, state) }
        if let fromText = c.from {
            let from = try expand(fromText, state)
            if let i = stageIndex(named: from, before: stage.index) {
                sources.append(CopySource(input: input(try self.stage(i).root), paths: patterns, what: "stage \(from)"))
            } else if let named = try namedContext(from), case .directory(let local) = named {
                sources.append(CopySource(input: input(local), paths: patterns, what: "build context \(from)"))
            } else if let named = try namedContext(from), case .files(let root) = named {
                sources.append(CopySource(input: input(root), paths: patterns, what: "build context \(from)"))
            } else if let named = try namedContext(from), case .stage(let other) = named {
                sources.append(CopySource(input: input(other.root), paths: patterns, what: "target \(from)"))
            } else {
                var ref = from
                if let named = try namedContext(from), case .image(let r) = named { ref = r }
                let image = try resolver.resolve(ref, platform: state.platform)
                let v = graph.add(.source(.image(reference: ref, manifest: image.manifest, platform: image.config.platform)))
                sources.append(CopySource(input: input(v), paths: patterns, what: "stage or image \(from)"))
            }
        } else {
            var fromContext: [String] = []
            var remotes = 0
            for p in patterns {
                // BuildKit's order: a git URL (never `github.com/…`, which could be a path), then
                // a download, then a context path.
                if let git = try GitReference.parse(p), !git.indistinguishableFromLocal {
                    guard isAdd else { throw LoweringError("COPY \(p): source can't be a git URL for COPY (use ADD)") }
                    let source = try GitSource(git, keepGitDir: c.keepGitDir ? true : nil, checksum: checksumText)
                    let v = graph.add(.source(.git(source)), origin: origin(node))
                    sources.append(CopySource(input: input(v), paths: ["/"], what: source.display))
                    remotes += 1
                    continue
                }
                if isAdd, p.hasPrefix("http://") || p.hasPrefix("https://") {
                    let checksum = try checksumText.map { try Digest(parsing: $0) }
                    let v = graph.add(.source(.http(url: p, checksum: checksum)))
                    sources.append(CopySource(input: input(v), paths: [p], what: p))
                    remotes += 1
                    continue
                }
                if p.contains("://") || p.hasPrefix("git@") {
                    throw LoweringError("\(kw) \(p): only http(s) and git URLs are supported as remote sources")
                }
                fromContext.append(p)
            }
            if !fromContext.isEmpty {
                let ctx = try buildContext("\(kw) \(fromContext[0])")
                sources.append(CopySource(input: input(ctx), paths: fromContext, what: "build context"))
            }
            if checksumText != nil && (remotes == 0 || !fromContext.isEmpty || !c.heredocs.isEmpty) {
                throw LoweringError("ADD --checksum can only be used with a URL source")
            }
        }
        if checksumText != nil && c.from != nil {
            throw LoweringError("ADD --checksum can only be used with a URL source")
        }
        let action = CopyAction(sources: sources, destination: cleanPath(dest.hasPrefix("/") ? dest : workdir + "/" + dest),
                                destinationIsDirectory: dest.hasSuffix("/") || dest.hasSuffix("/.") || dest == ".",
                                chown: try c.chown.map { try expand($0, state) }, chmod: chmod, excludes: excludes,
                                unpackArchives: isAdd, keyword: kw)
        let v = graph.add(.file(.copy(action)), inputs: inputs, name: name, origin: origin(node), ignoreCache: ignoresCache(stage))
        change(&state, v, "\(kw) \(c.sources.joined(separator: " ")) \(dest) # buildkit")
    }
}
