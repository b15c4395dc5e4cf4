import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem
import Testing
@testable import RBuildDockerfile

/// Images for lowering without a store: each name has a manifest digest made from the name and
/// platform, and a config with PATH set (as real images have).
struct FixedImages: ImageResolving {
    func resolve(_ reference: String, platform: Platform) throws -> ResolvedImage {
        var config = ImageConfig(created: nil, author: nil, architecture: platform.architecture, os: platform.os,
                                 variant: platform.variant, config: ImageConfig.Config(),
                                 rootfs: ImageConfig.RootFS(diff_ids: []), history: [])
        config.config?.Env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        return ResolvedImage(reference: reference, manifest: CacheKey.of(["image", reference, platform.description]), config: config)
    }
}

func lowered(_ text: String, platform: String = "linux/amd64", graph: Graph = Graph(), context: String? = "/context",
             args: [String: String] = [:], network: NetworkMode = .isolated, extraHosts: [ExtraHost] = []) throws -> LoweredStage {
    let df = try Dockerfile.parse(text)
    var o = LoweringOptions(platform: try Platform(parsing: platform))
    o.buildPlatform = try Platform(parsing: "linux/amd64")
    o.contextDirectory = context
    o.buildArgs = args
    o.network = network
    o.extraHosts = extraHosts
    return try df.lower(o, graph: graph, resolver: FixedImages())
}

/// Dockerfile → graph, compared with golden files (Fixtures/lowering/NAME.graph). A change
/// here changes cache keys for every user: update the files (RBUILD_UPDATE_GOLDEN=1) only on
/// purpose.
struct LoweringGoldenTests {
    static let cases = Corpus.cases("lowering").filter { $0.hasSuffix(".Dockerfile") }

    @Test("the golden cases are present") func present() {
        #expect(Self.cases.count >= 3)
    }

    @Test("lowering matches the golden graph", arguments: cases)
    func golden(_ name: String) throws {
        let stage = try lowered(Corpus.read("lowering/" + name))
        var text = Graph.dump([stage.root])
        text += "history:\n" + stage.steps.map { "  \($0.createdBy)" + ($0.vertex.map { " <- \($0.digest.hex.prefix(12))" } ?? "") }
            .joined(separator: "\n") + "\n"
        let goldenPath = Corpus.root + "/lowering/" + name.replacingOccurrences(of: ".Dockerfile", with: ".graph")
        if ProcessInfo.processInfo.environment["RBUILD_UPDATE_GOLDEN"] == "1" {
            try text.write(toFile: goldenPath, atomically: true, encoding: .utf8)
        }
        #expect(text == (try? String(contentsOfFile: goldenPath, encoding: .utf8)), "\(text)")
    }
}

struct LoweringTests {
    @Test("config-only instructions are not in the graph") func configOnly() throws {
        let a = try lowered("FROM busybox\nLABEL v=1\nEXPOSE 80\nMAINTAINER x\nCMD [\"a\"]\nRUN echo hi\n")
        let b = try lowered("FROM busybox\nLABEL v=2\nEXPOSE 8080\nMAINTAINER y\nCMD [\"b\"]\nRUN echo hi\n")
        #expect(a.root.digest == b.root.digest)
        #expect(a.image.config?.Labels?["v"] == "1" && b.image.config?.Labels?["v"] == "2")
        #expect(Graph.walk([a.root]).count == 2)
    }

    @Test("what a RUN sees is in its op: ENV, ARG, USER, WORKDIR, SHELL") func runInputs() throws {
        let base = try lowered("FROM busybox\nRUN echo hi\n").root.digest
        for variant in ["ENV A=1", "ARG B=2", "USER 1000", "SHELL [\"/bin/bash\", \"-c\"]"] {
            let d = try lowered("FROM busybox\n\(variant)\nRUN echo hi\n").root.digest
            #expect(d != base, "\(variant)")
        }
        // An ARG given a value by --build-arg changes the RUN that sees it; an undeclared one does not.
        let declared = "FROM busybox\nARG V\nRUN echo $V\n"
        #expect(try lowered(declared, args: ["V": "1"]).root.digest != lowered(declared, args: ["V": "2"]).root.digest)
        #expect(try lowered("FROM busybox\nRUN echo hi\n", args: ["V": "1"]).root.digest == base)
    }

    /// BuildKit's frontend: `--network=default` (or none given) is the build's `--network`.
    @Test("RUN --network lowers to the op's network", arguments: [
        ("", NetworkMode.isolated, NetworkMode.isolated),
        ("--network=default ", .isolated, .isolated),
        ("--network=none ", .isolated, .none),
        ("--network=host ", .isolated, .host),
        ("", .none, .none),
        ("--network=default ", .host, .host),
        ("--network=none ", .host, .none),
    ])
    func runNetwork(_ flag: String, _ buildDefault: NetworkMode, _ expected: NetworkMode) throws {
        let stage = try lowered("FROM busybox\nRUN \(flag)echo hi\n", network: buildDefault)
        guard case .exec(let e) = stage.root.op else { Issue.record("not an exec: \(stage.root)"); return }
        #expect(e.network == expected)
    }

    @Test("--add-host reaches every RUN step's op") func extraHosts() throws {
        let hosts = [ExtraHost(name: "db", address: "10.0.0.5")]
        let stage = try lowered("FROM busybox\nRUN echo one\nRUN echo two\n", extraHosts: hosts)
        let execs = Graph.walk([stage.root]).compactMap { v -> ExecOp? in
            if case .exec(let e) = v.op { return e } else { return nil }
        }
        #expect(execs.count == 2 && execs.allSatisfy { $0.extraHosts == hosts })
        #expect(stage.root.digest != (try lowered("FROM busybox\nRUN echo one\nRUN echo two\n").root.digest))
    }

    @Test("the same work in two stages and two platforms is one vertex") func sharedVertices() throws {
        let text = """
            FROM --platform=$BUILDPLATFORM busybox AS build
            RUN echo compile > /out
            FROM busybox AS a
            RUN echo same > /s
            FROM busybox AS b
            RUN echo same > /s
            FROM busybox
            COPY --from=build /out /out
            COPY --from=a /s /a
            COPY --from=b /s /b
            """
        let graph = Graph()
        let amd = try lowered(text, platform: "linux/amd64", graph: graph)
        let arm = try lowered(text, platform: "linux/arm64", graph: graph)
        let all = Graph.walk([amd.root, arm.root])
        let execs = all.compactMap { v -> ExecOp? in if case .exec(let e) = v.op { return e } else { return nil } }
        // `echo compile` once (build platform), `echo same` once per target platform (a and b share it).
        #expect(execs.filter { $0.args.last == "echo compile > /out" }.count == 1)
        #expect(execs.filter { $0.args.last == "echo same > /s" }.count == 2)
        let copies = all.filter { if case .file(.copy) = $0.op { return true } else { return false } }
        // COPY --from=a and --from=b read the same vertex: the copies differ only by their destination.
        let amdCopies = Graph.walk([amd.root]).filter { if case .file(.copy) = $0.op { return true } else { return false } }
        #expect(Set(amdCopies.flatMap { $0.inputs.dropFirst().map(\.digest) }).count == 2)
        #expect(copies.count == 6)
    }

    @Test("FROM a stage does not depend on the stage's name") func stageNames() throws {
        let a = try lowered("FROM busybox AS one\nRUN echo x\nFROM one\nRUN echo y\n")
        let b = try lowered("FROM busybox AS two\nRUN echo x\nFROM two\nRUN echo y\n")
        #expect(a.root.digest == b.root.digest)
    }

    @Test("lowering errors name the line") func errors() throws {
        #expect(throws: BuildError.self) { try lowered("FROM busybox\nRUN --mount=type=nfs,target=/x echo\n") }
        #expect(throws: LoweringError.self) {
            let df = try Dockerfile.parse("FROM busybox AS a\n")
            var o = LoweringOptions(platform: .host)
            o.target = "missing"
            _ = try df.lower(o, graph: Graph(), resolver: FixedImages())
        }
    }

    @Test("git URLs: refused where BuildKit refuses them, at their line", arguments: [
        ("COPY https://h/o/r.git /x/", "source can't be a git URL for COPY"),
        ("ADD --checksum=abc ./local /x/", "ADD --checksum can only be used with a URL source"),
        ("ADD --checksum=abc https://h/o/r.git ./local /x/", "ADD --checksum can only be used with a URL source"),
        ("ADD --checksum=sha256:00 https://h/o/r.git /x/", "expected hex commit hash"),
        ("ADD https://h/o/r.git?nope=1 /x/", "unexpected query \"nope\""),
        ("ADD --keep-git-dir=true https://h/o/r.git?keep-git-dir=false /x/", "inconsistent keep-git-dir configuration"),
        ("ADD ftp://h/o/r.git /x/", "only http(s) and git URLs are supported"),
    ])
    func gitErrors(_ line: String, _ message: String) {
        #expect {
            _ = try lowered("FROM busybox\n\(line)\n")
        } throws: { e in
            guard let e = e as? BuildError else { return false }
            return e.line == 2 && e.message.contains(message)
        }
    }

    @Test("a git or http(s) named context is a root of its files") func remoteNamedContexts() throws {
        let df = try Dockerfile.parse("FROM busybox\nCOPY --from=src a /a\nCOPY --from=tb b /b\n")
        var o = LoweringOptions(platform: .host)
        o.buildContexts = ["src": "git@example.com:o/r.git#v1:sub", "tb": "https://example.com/ctx.tar.gz"]
        let stage = try df.lower(o, graph: Graph(), resolver: FixedImages())
        let text = Graph.dump([stage.root])
        #expect(text.contains("source git git@example.com:o/r.git#v1:sub keep-git-dir=false"), "\(text)")
        #expect(text.contains("# [context src] git@example.com:o/r.git#v1:sub"), "\(text)")
        #expect(text.contains("source http https://example.com/ctx.tar.gz"), "\(text)")
        #expect(text.contains("unpack=true unpack-downloads"), "\(text)")
        #expect(text.contains("# [context tb] https://example.com/ctx.tar.gz"), "\(text)")
    }
}

/// Cache keys of lowered graphs, computed by a solver over a real state dir (nothing runs).
struct CacheKeyRuleTests {
    final class Dirs {
        let root: String
        init() throws {
            root = NSTemporaryDirectory() + "rbuild-keys-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }

        func solver(_ name: String) throws -> Solver {
            let store = try ImageStore(root: root + "/" + name)
            try FileManager.default.createDirectory(atPath: store.layout.tmp, withIntermediateDirectories: true)
            return Solver(store: store, snapshotter: try Snapshotters.make(.copy, stateDirectory: store.root, tasks: SandboxTasks()),
                          cache: try CacheIndex(path: store.layout.cacheIndex), reporter: ProgressReporter(sink: nil), sourceDateEpoch: nil)
        }

        func context(_ name: String, _ files: [String: (String, mode_t)]) throws -> String {
            let dir = root + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (f, (content, mode)) in files {
                try content.write(toFile: dir + "/" + f, atomically: false, encoding: .utf8)
                chmod(dir + "/" + f, mode)
            }
            return dir
        }
    }

    /// The keys of every exec and file vertex, in order.
    func keys(_ text: String, context: String, solver: Solver) async throws -> [Digest] {
        let stage = try lowered(text, context: context)
        var out: [Digest] = []
        for v in Graph.walk([stage.root]) where !(v.inputs.isEmpty) {
            out.append(try await solver.cacheKey(v))
        }
        return out
    }

    let dockerfile = """
        FROM busybox
        LABEL version=1
        ENV A=1
        COPY f /f
        RUN cat /f
        """

    @Test("LABEL/CMD/EXPOSE edits keep keys; ENV, file bytes and modes change them") func rules() async throws {
        let dirs = try Dirs()
        let solver = try dirs.solver("state")
        let ctx = try dirs.context("ctx", ["f": ("one\n", 0o644), "unrelated": ("x", 0o644)])
        let first = try await keys(dockerfile, context: ctx, solver: solver)
        #expect(first.count == 2)
        let relabelled = dockerfile.replacingOccurrences(of: "LABEL version=1", with: "LABEL version=2\nCMD [\"x\"]\nEXPOSE 80")
        #expect(try await keys(relabelled, context: ctx, solver: try dirs.solver("s2")) == first)
        // ENV read by RUN: the COPY keeps its key, the RUN does not.
        let env = try await keys(dockerfile.replacingOccurrences(of: "ENV A=1", with: "ENV A=2"), context: ctx, solver: try dirs.solver("s3"))
        #expect(env[0] == first[0] && env[1] != first[1])
        // A file the COPY does not read changes nothing; its source's bytes, or mode, do.
        let other = try dirs.context("ctx-unrelated", ["f": ("one\n", 0o644), "unrelated": ("y", 0o644)])
        #expect(try await keys(dockerfile, context: other, solver: try dirs.solver("s4")) == first)
        let bytes = try dirs.context("ctx-bytes", ["f": ("two\n", 0o644)])
        #expect(try await keys(dockerfile, context: bytes, solver: try dirs.solver("s5"))[0] != first[0])
        let mode = try dirs.context("ctx-mode", ["f": ("one\n", 0o755)])
        #expect(try await keys(dockerfile, context: mode, solver: try dirs.solver("s6"))[0] != first[0])
        // A touch (new mtime, same bytes) keeps the key.
        var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        utimensat(AT_FDCWD, ctx + "/f", &times, 0)
        #expect(try await keys(dockerfile, context: ctx, solver: try dirs.solver("s7")) == first)
    }

    @Test("the same Dockerfile in two state dirs, from contexts at two paths, has the same keys") func portable() async throws {
        let dirs = try Dirs()
        let a = try dirs.context("one/ctx", ["f": ("same\n", 0o644)])
        let b = try dirs.context("two/elsewhere", ["f": ("same\n", 0o644)])
        let ka = try await keys(dockerfile, context: a, solver: try dirs.solver("state-a"))
        let kb = try await keys(dockerfile, context: b, solver: try dirs.solver("state-b"))
        #expect(ka == kb)
    }
}
