import Foundation
import RBuildBake
import RBuildExporters
import RBuildOCI
import RBuildRuntime
import RBuildSolver
import RBuildSystem
import Synchronization

/// How `rbuild bake` runs the targets a bake file resolved to.
public struct BakeRunOptions: Sendable {
    /// Where relative contexts and named-context directories are found (buildx: the directory
    /// bake runs in).
    public var directory: String
    /// `--no-cache`, `--pull`: for every target, on top of its own.
    public var noCache = false
    public var pull = false
    /// `--load`: every target's output is the local image store (`type=image`); `--push`: a
    /// registry (`type=image,push=true`), as buildx's shorthands set `output` on every target.
    public var load = false
    public var push = false
    /// One progress view for every target (steps labelled with the target's name).
    public var reporter: ProgressReporter?
    /// SOURCE_DATE_EPOCH and compression of the layers made.
    public var layer = LayerOptions()

    public init(directory: String) { self.directory = directory }
}

/// What one target of a bake run came to.
public struct BakeOutcome: Sendable {
    public var target: String
    public var result: BuildResult?
    /// Why it failed (nil: it built).
    public var error: String?
}

extension Builder {
    /// Builds `targets` at once in this process: one cache and one table of running work, so a
    /// step two targets share runs once, and independent targets run side by side. A target that
    /// fails does not stop the others; every target's outcome is returned, in order.
    /// `definition` gives the targets that `target:NAME` contexts name.
    public func bake(_ targets: [BakeTarget], definition: BakeDefinition, run: BakeRunOptions) -> [BakeOutcome] {
        let outcomes = Mutex([BakeOutcome?](repeating: nil, count: targets.count))
        let group = DispatchGroup()
        for (i, t) in targets.enumerated() {
            group.enter()
            Thread.detachNewThread { [self] in
                defer { group.leave() }
                var outcome = BakeOutcome(target: t.name)
                do {
                    let (options, outputs, tags) = try buildOptions(for: t, definition: definition, run: run)
                    outcome.result = try build(options, outputs: outputs, tags: tags)
                } catch {
                    outcome.error = "\(error)"
                }
                outcomes.withLock { $0[i] = outcome }
            }
        }
        group.wait()
        return outcomes.withLock { $0.map { $0! } }
    }

    /// A bake target as `rbuild build` options: its outputs (`type=image` when it has tags and
    /// none), its tags, and the rest; `target:OTHER` contexts become that target's build,
    /// lowered with this one.
    public func buildOptions(for t: BakeTarget, definition: BakeDefinition, run: BakeRunOptions,
                             depth: Int = 0) throws -> (BuildOptions, [OutputSpec], [String]) {
        func fail(_ message: String) -> BuildFailure { BuildFailure("target \(t.name): \(message)") }
        guard depth < 16 else { throw fail("target: contexts nest more than 16 deep (a target names itself?)") }
        func path(_ p: String, in dir: String) -> String {
            p.hasPrefix("/") ? p : URL(fileURLWithPath: dir).appendingPathComponent(p).standardizedFileURL.path
        }
        var o = BuildOptions()
        o.label = t.name
        o.layer = run.layer
        o.reporter = run.reporter
        let context = t.context ?? "."
        let git = try BuildOptions.isGitContext(context, in: run.directory)
        if !git, context.contains("://") {
            throw fail("context \(context): remote contexts other than git are not supported yet; use a directory or a git URL")
        }
        let dir = path(context, in: run.directory)
        if git { o.contextURL = context } else { o.contextDirectory = dir }
        if let inline = t.dockerfileInline {
            o.dockerfileText = inline
            o.dockerfileName = "Dockerfile"
        } else if git, t.dockerfile?.hasPrefix("/") != true {
            // As `rbuild build GITURL`: the dockerfile is a path in the checkout, unless absolute.
            o.dockerfilePath = t.dockerfile
        } else {
            do {
                try Builder.load(dockerfile: path(t.dockerfile ?? "Dockerfile", in: dir), into: &o)
            } catch {
                throw fail("\(error)")
            }
        }
        for (k, v) in t.args { if let v { o.buildArgs[k] = v } }
        for (k, v) in t.labels { if let v { o.labels[k] = v } }
        o.target = t.target
        o.platforms = try t.platforms.flatMap { $0.split(separator: ",") }.map { text in
            let p = try Platform(parsing: text.trimmingCharacters(in: .whitespaces))
            guard p.os == "linux", Architecture(platform: p) != nil else {
                throw fail("platform \(text): rbuild builds for linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/riscv64, linux/ppc64le and linux/s390x")
            }
            return p
        }
        for (name, value) in t.contexts {
            if value.hasPrefix("target:") {
                let otherName = String(value.dropFirst("target:".count))
                guard let other = definition.targets[otherName] else {
                    throw fail("context \(name)=\(value): there is no target \(otherName)")
                }
                var (otherOptions, _, _) = try buildOptions(for: other, definition: definition, run: run, depth: depth + 1)
                otherOptions.platforms = []   // built for this target's platforms
                o.targetContexts[name] = otherOptions
            } else if try value.contains("://") || GitReference.parse(value) != nil {
                o.buildContexts[name] = value
            } else {
                o.buildContexts[name] = path(value, in: run.directory)
            }
        }
        do {
            o.cacheFrom = try t.cacheFrom.map(CacheImportSpec.parse)
            o.cacheTo = try t.cacheTo.map(CacheExportSpec.parse)
            for s in t.secrets { try o.addSecret(s) }
            for s in t.ssh { try o.addSSH(s) }
            o.entitlements = Set(try t.entitlements.map(Entitlement.parse))
        } catch {
            throw fail("\(error)")
        }
        if let n = t.network {
            guard let mode = NetworkMode(rawValue: n) else { throw fail("network \(n): expected default, none or host") }
            o.network = mode
        }
        o.noCache = run.noCache || (t.noCache ?? false)
        o.noCacheFilter = t.noCacheFilter
        o.pull = run.pull || (t.pull ?? false)
        var outputs: [OutputSpec]
        if run.push {
            outputs = [OutputSpec(kind: .image, attributes: ["push": "true"])]
        } else if run.load {
            outputs = [OutputSpec(kind: .image)]
        } else {
            do { outputs = try t.outputs.map(OutputSpec.parse) } catch { throw fail("\(error)") }
        }
        if outputs.isEmpty && !t.tags.isEmpty { outputs = [OutputSpec(kind: .image)] }
        for s in outputs { do { _ = try s.compression() } catch { throw fail("\(error)") } }
        if o.platforms.count > 1, outputs.contains(where: { $0.kind == .docker }) {
            throw fail("type=docker holds one platform; build one platform, or use type=oci")
        }
        do {
            for a in t.attest { try o.attestations.addAttest(a) }
        } catch {
            throw fail("\(error)")
        }
        do { for a in t.annotations { try o.annotations.add(a) } } catch { throw fail("\(error)") }
        return (o, outputs, t.tags)
    }
}

extension BakeOutcome {
    /// The `--metadata-file` entry of a target that built (buildx's keys).
    public func metadata() throws -> Any? {
        guard let result else { return nil }
        return try JSONSerialization.jsonObject(with: try result.metadataJSON())
    }
}
