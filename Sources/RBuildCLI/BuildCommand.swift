import ArgumentParser
import Foundation
import RBuild

struct BuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build an image from a Dockerfile, rootless, with the flags of docker buildx build.",
        discussion: """
        CONTEXT is a directory, a git URL (https://HOST/O/R.git#REF:SUBDIR, git@HOST:O/R.git, \
        ssh://…, git://…; its Dockerfile is read from the checkout, -f naming a path in it — an \
        absolute -f a local file), or - to read the Dockerfile from stdin with no context. Without \
        -o, the image is stored under the -t names (type=image); with neither, it stays in the \
        build cache only.
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: [.short, .customLong("file")], help: "The Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
    var file: String?

    @Option(name: [.short, .customLong("tag")], help: "Name the image (repeatable).")
    var tags: [String] = []

    @Option(name: [.short, .customLong("output")], help: "type=oci|docker|local|tar|image|cacheonly[,dest=…][,name=…][,tar=false][,compression=gzip|zstd][,compression-level=N][,rewrite-timestamp=true] (repeatable).")
    var outputs: [String] = []

    @Option(name: .customLong("build-arg"), help: "KEY=VALUE, or KEY to take it from the environment.")
    var buildArgs: [String] = []

    @Option(name: .long, help: "The stage to build (default: the last).")
    var target: String?

    @Option(name: .long, help: "Target platforms, comma-separated, e.g. linux/amd64,linux/arm64 (default: the host's); other architectures' RUN steps run under qemu-user-static.")
    var platform: String?

    @Option(name: .customLong("label"), help: "KEY=VALUE added to the image's labels.")
    var labels: [String] = []

    @Option(name: .customLong("build-context"), help: "NAME=VALUE: a directory, docker-image://REF, oci-layout://DIR[:TAG], a git URL, or an http(s) URL of a tarball.")
    var buildContexts: [String] = []

    @Option(name: .customLong("secret"), help: "A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VARIABLE (repeatable).")
    var secrets: [String] = []

    @Option(name: .customLong("ssh"), help: "An ssh agent for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK), or ID=SOCKET|KEYFILE[,KEYFILE…] (repeatable).")
    var ssh: [String] = []

    @Option(name: .customLong("cache-from"), help: "Import a build cache (repeatable): type=local,src=DIR[,digest=…|tag=…], type=registry,ref=REF, or REF (a cache, or an image with an inline cache).")
    var cacheFrom: [String] = []

    @Option(name: .customLong("cache-to"), help: "Export the build cache (repeatable): type=local,dest=DIR | type=registry,ref=REF | type=inline | REF, with mode=min|max, compression=gzip|zstd|uncompressed, compression-level=N, image-manifest=true, cache-mounts=true, ignore-error=true.")
    var cacheTo: [String] = []

    @Option(name: .long, help: "Attach an SLSA provenance attestation: true (mode=min), false, or mode=min|max.")
    var provenance: String?

    @Option(name: .long, help: "Attach an SPDX SBOM attestation of the packages in the image (dpkg, apk, rpm, Python, Node): true or false.")
    var sbom: String?

    @Option(name: .long, help: "Attestation (repeatable): type=provenance[,mode=min|max] or type=sbom.")
    var attest: [String] = []

    @Flag(name: .customLong("no-cache"), help: "Run every step, using no cached result (local or imported).")
    var noCache = false

    @Option(name: .customLong("no-cache-filter"), help: "Run the steps of this stage without the cache (repeatable).")
    var noCacheFilter: [String] = []

    @Flag(name: .long, help: "Always fetch base images from their registry, even those the local store has.")
    var pull = false

    @Option(name: .long, help: "The network of RUN steps that do not choose one: default (a network of their own, outbound only), none, or host (needs --allow network.host).")
    var network: String = "default"

    @Option(name: .customLong("add-host"), help: "NAME:IP added to every RUN step's /etc/hosts (repeatable).")
    var addHosts: [String] = []

    @Option(name: .customLong("allow"), help: "Grant an entitlement (repeatable): network.host lets RUN steps use the host's network.")
    var allow: [String] = []

    @Option(name: .long, help: "auto, tty, plain, rawjson or quiet.")
    var progress: String = "auto"

    @Flag(name: [.short, .long], help: "Print only the image id (progress=quiet).")
    var quiet = false

    @Option(name: .long, help: "Write the image id (its config digest) to this file.")
    var iidfile: String?

    @Option(name: .customLong("metadata-file"), help: "Write the build result's metadata (JSON) to this file.")
    var metadataFile: String?

    @Option(name: .long, help: "How image layers become root filesystems: overlay, fuse-overlayfs or copy (default: see `rbuild info`).")
    var snapshotter: String?

    @Option(name: .long, help: "How RUN steps are isolated: auto (the default: the strongest this system allows), sandbox, no-pid-sandbox or chroot (see `rbuild info`); also RBUILD_ISOLATION.")
    var isolation: String?

    @Option(name: .customLong("max-layer-size"), help: "The most bytes one image layer may unpack to, e.g. 64GiB (the default), 512m; also RBUILD_MAX_LAYER_SIZE.")
    var maxLayerSize: String?

    @Flag(name: .long, help: "Parse and run the build checks without building; exit non-zero on errors (= --call check).")
    var check = false

    @Option(name: .long, help: "build (default), check, outline (the build args, secrets and ssh a target uses) or targets (the stages, with their descriptions); outline and targets take ,format=json.")
    var call: String = "build"

    @Flag(name: .long, help: "Push the image to its registry (-t names): shorthand for --output type=registry.")
    var push = false

    @Flag(name: .long, help: "Load the image into docker or podman (`docker load`, else `podman load`, the first on PATH): shorthand for --output type=docker.")
    var load = false

    @Option(name: .long, help: "An OCI annotation of the image, [TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE with TYPE manifest (default), index, manifest-descriptor or index-descriptor (repeatable).")
    var annotation: [String] = []

    @Option(name: .customLong("shm-size"), help: "The size of /dev/shm in RUN steps, e.g. 128m, 1g (default 64m).")
    var shmSize: String?

    @Option(name: .long, help: "A resource limit of RUN steps, NAME=SOFT[:HARD] (e.g. nofile=1024:2048; -1 unlimited; repeatable); a hard limit above yours is refused.")
    var ulimit: [String] = []

    @Option(name: .customLong("cgroup-parent"), help: "Refused: rootless rbuild runs steps in no cgroup of its making.")
    var cgroupParent: String?

    @Option(name: .long, help: "The builder whose nodes build the platforms they run (see rbuild builder; default: RBUILD_BUILDER, else the one builder use chose, else this machine).")
    var builder: String?

    @Argument(help: "The build context: a directory, a git URL, or - for none.")
    var context: String = "."

    /// The environment variable that hands node sessions from the process that started ssh to
    /// rbuild's re-execution in its user namespace.
    static let nodeLinksVariable = "RBUILD_NODE_LINKS"

    func parsePlatforms() throws -> [Platform] {
        guard let platform else { return [] }
        return try platform.split(separator: ",").map { text in
            let p = try Platform(parsing: text.trimmingCharacters(in: .whitespaces))
            guard p.os == "linux", Architecture(platform: p) != nil else {
                throw RuntimeError(.badOption, "--platform \(text): rbuild builds for linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/riscv64, linux/ppc64le and linux/s390x")
            }
            return p
        }
    }

    /// With a builder that has nodes, starts ssh to those that get a platform, before rbuild
    /// enters its user namespace (where ssh would not be the user): the sessions are handed down
    /// to the build in the environment.
    /// Returns the sessions' fds, which the re-executed process takes over.
    func connectNodes() throws -> [Int32] {
        // Already connected by the process that re-executed this one.
        guard getenvString(Self.nodeLinksVariable) == nil else { return [] }
        let (call, _) = try parseCall()
        guard !check, call == "build" else { return [] }
        let store = BuilderStore()
        guard let config = try store.resolve(builder), !config.nodes.isEmpty else { return [] }
        let platforms = try parsePlatforms()
        guard !platforms.isEmpty else { return [] }
        var options = BuildOptions()
        for s in ssh { try options.addSSH(s) }
        let links = try Builder.connectNodes(config, platforms: platforms, store: store, ssh: options.ssh)
        if links.isEmpty { return [] }
        setenv(Self.nodeLinksVariable, NodeLink.encode(links), 1)
        return links.flatMap { [$0.input, $0.output, $0.errors] }
    }

    /// The sessions `connectNodes` started (in this process or the one that re-executed it).
    func inheritedNodeLinks() throws -> [NodeLink] {
        guard let text = getenvString(Self.nodeLinksVariable) else { return [] }
        unsetenv(Self.nodeLinksVariable)
        return try NodeLink.decode(text)
    }

    func parseArgs() -> [String: String] {
        var args: [String: String] = [:]
        for a in buildArgs {
            let kv = a.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            // `--build-arg NAME` takes the value from rbuild's own environment, as buildx does.
            if kv.count == 2 { args[kv[0]] = kv[1] } else if let v = getenvString(kv[0]) { args[kv[0]] = v }
        }
        return args
    }

    /// `--call NAME[,format=json]`.
    func parseCall() throws -> (name: String, json: Bool) {
        let fields = call.split(separator: ",").map(String.init)
        guard let name = fields.first, ["build", "check", "outline", "targets"].contains(name) else {
            throw ValidationError("--call \(call): expected build, check, outline or targets")
        }
        var json = false
        for f in fields.dropFirst() {
            switch f {
            case "format=json": json = true
            case "format=text": json = false
            default: throw ValidationError("--call \(call): unknown option \(f) (format=json|text)")
            }
        }
        return (name, json)
    }

    func run() throws {
        if let cgroupParent {
            throw BuildFailure("--cgroup-parent \(cgroupParent): rootless rbuild does not manage cgroups (its steps run in the cgroup rbuild was started in, which an unprivileged user cannot move them out of); start rbuild itself in the cgroup you want, e.g. with systemd-run --user --scope -p Slice=…")
        }
        let (call, json) = try parseCall()
        if check || call == "check" { return try runCheck() }
        var options = BuildOptions()
        options.buildArgs = parseArgs()
        options.target = target
        options.noCache = noCache
        for a in attest { try options.attestations.addAttest(a) }
        if let provenance { try options.attestations.addProvenance(provenance) }
        if let sbom { try options.attestations.addSBOM(sbom) }
        options.noCacheFilter = noCacheFilter
        options.pull = pull
        guard let networkMode = NetworkMode(rawValue: network) else {
            throw ValidationError("--network \(network): expected default, none or host")
        }
        options.network = networkMode
        options.extraHosts = try addHosts.map(ExtraHost.parse)
        if let shmSize {
            guard let n = byteSize(shmSize), n >= 4096 else { throw ValidationError("--shm-size \(shmSize): expected a size such as 64m or 1g") }
            options.shmSize = n
        }
        options.ulimits = try ulimit.map(Ulimit.parse)
        for a in annotation { try options.annotations.add(a) }
        options.entitlements = Set(try allow.map(Entitlement.parse))
        for l in labels {
            let kv = l.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            options.labels[kv[0]] = kv.count == 2 ? kv[1] : ""
        }
        options.cacheFrom = try cacheFrom.map(CacheImportSpec.parse)
        options.cacheTo = try cacheTo.map(CacheExportSpec.parse)
        for secret in secrets { try options.addSecret(secret) }
        for s in ssh { try options.addSSH(s) }
        for c in buildContexts {
            let kv = c.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("--build-context \(c): expected NAME=VALUE") }
            options.buildContexts[kv[0]] = kv[1]
        }
        options.platforms = try parsePlatforms()
        // The Dockerfile: -f FILE, -f - (stdin), CONTEXT - (stdin, no context), CONTEXT/Dockerfile.
        // A git context: -f names a file in the checkout (as for docker's remote contexts), unless
        // it is absolute (a local file, as buildx) or - (stdin).
        if context == "-" {
            options.dockerfileText = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            options.dockerfileName = "Dockerfile"
        } else if try BuildOptions.isGitContext(context) {
            options.contextURL = context
            if file == "-" {
                options.dockerfileText = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else if let file, file.hasPrefix("/") {
                try Builder.load(dockerfile: file, into: &options)
            } else {
                options.dockerfilePath = file
            }
        } else {
            options.contextDirectory = context
            if file == "-" {
                options.dockerfileText = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                try Builder.load(dockerfile: file ?? context + "/Dockerfile", into: &options)
            }
        }
        if call == "outline" || call == "targets" { return try runCall(call, json: json, options) }
        var specs = try outputs.map(OutputSpec.parse)
        // buildx's shorthands: --push is type=registry (or push=true on an image output), --load type=docker.
        if push {
            if let i = specs.firstIndex(where: { $0.kind == .image }) { specs[i].attributes["push"] = "true" }
            else if !specs.contains(where: { $0.kind == .registry }) { specs.append(OutputSpec(kind: .registry)) }
        }
        if push && tags.isEmpty && !specs.contains(where: { !$0.imageNames.isEmpty }) {
            throw ValidationError("--push needs a name to push to: -t REGISTRY/REPO:TAG")
        }
        if load && !specs.contains(where: { $0.kind == .docker && $0.destination == nil }) { specs.append(OutputSpec(kind: .docker)) }
        if specs.isEmpty && !tags.isEmpty { specs = [OutputSpec(kind: .image)] }
        for s in specs { _ = try s.compression() }   // checked before building
        if options.platforms.count > 1, specs.contains(where: { $0.kind == .docker }) {
            throw ValidationError("docker exporter does not currently support exporting manifest lists: type=docker holds one platform; build one platform, or use type=oci")
        }
        if specs.filter({ $0.destination == "-" }).count > 1 {
            throw ValidationError("only one output can go to stdout")
        }

        let mode = quiet ? "quiet" : progress
        let (sink, view) = try progressSink(mode)
        var tty = view
        options.progress = sink
        let reporter = ProgressReporter(sink: sink)
        options.reporter = reporter
        Sandbox.killSandboxesOnInterrupt()
        let kind = try snapshotterKind(snapshotter)
        let builder = try Builder(stateDirectory: global.root, snapshotter: kind, maxLayerSize: try MaxLayerSize.resolve(flag: maxLayerSize),
                                  isolation: try isolation.flatMap(Isolation.parse))
        defer { tty?.finish() }
        do {
            let result = try builder.build(options, outputs: specs, tags: tags, nodes: try inheritedNodeLinks())
            if specs.isEmpty {
                reporter.note("WARNING: No output specified: the build result stays in the build cache only (use -t NAME or -o type=…)")
            }
            let id = result.imageID
            if let iidfile { try Data(id.description.utf8).write(to: URL(fileURLWithPath: iidfile)) }
            if let metadataFile { try result.metadataJSON().write(to: URL(fileURLWithPath: metadataFile)) }
            if mode == "quiet" { print(id.description) }
        } catch {
            tty?.finish()
            tty = nil
            if Sandbox.interruptedBy != 0 {
                printError("build interrupted")
                throw ExitCode(128 + Sandbox.interruptedBy)
            }
            throw error
        }
    }

    /// `--call outline|targets`: what the Dockerfile asks for, printed; nothing is built.
    func runCall(_ call: String, json: Bool, _ options: BuildOptions) throws {
        func printJSON(_ value: some Encodable) throws {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try e.encode(value), as: UTF8.self))
        }
        func table(_ header: [String], _ rows: [[String]]) { printTable([header] + rows) }
        if call == "targets" {
            let targets = try dockerfileTargets(options)
            if json { return try printJSON(targets) }
            table(["TARGET", "DESCRIPTION"], targets.map { [$0.name, ($0.isDefault ? "(default) " : "") + $0.description] })
            return
        }
        let outline = try outlineDockerfile(options)
        if json { return try printJSON(outline) }
        if let t = outline.target { print("TARGET:      \(t)") }
        if !outline.description.isEmpty { print("DESCRIPTION: \(outline.description)") }
        if outline.target != nil || !outline.description.isEmpty { print("") }
        if !outline.args.isEmpty {
            table(["BUILD ARG", "VALUE", "DESCRIPTION"], outline.args.map { [$0.name, $0.value ?? "<none>", $0.description] })
            print("")
        }
        if !outline.secrets.isEmpty {
            table(["SECRET", "REQUIRED"], outline.secrets.map { [$0.id, $0.required ? "true" : ""] })
            print("")
        }
        if !outline.ssh.isEmpty {
            table(["SSH", "REQUIRED"], outline.ssh.map { [$0.id, $0.required ? "true" : ""] })
            print("")
        }
    }

    func runCheck() throws {
        var targetPlatform: Platform?
        if let platform {
            targetPlatform = try Platform(parsing: String(platform.split(separator: ",").first ?? ""))
        }
        let path = file ?? context + "/Dockerfile"
        let report = try checkDockerfile(at: path, buildArgs: parseArgs(), targetPlatform: targetPlatform)
        if let target, report.stages > 0 {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let definition = try Dockerfile.parse(text).definition()
            if definition.stage(named: target) == nil {
                throw RuntimeError(.badOption, "target stage \"\(target)\" could not be found in \(path)")
            }
        }
        let name = (path as NSString).lastPathComponent
        for w in report.warnings {
            print("\(w.isError ? "ERROR" : "WARN"): \(w.rule): \(w.message) (\(name):\(w.range.startLine))")
        }
        let n = report.warnings.count
        print(n == 0 ? "Check complete, no warnings found." : "Check complete, \(n) warning\(n == 1 ? "" : "s") found.")
        if report.hasErrors { throw ExitCode(1) }
    }
}

extension BuildError: RenderableError { var exitStatus: Int32 { 1 } }
extension BuildFailure: RenderableError { var exitStatus: Int32 { 1 } }
extension SolveError: RenderableError { var exitStatus: Int32 { 1 } }
extension ExportError: RenderableError { var exitStatus: Int32 { 1 } }
