import Foundation
import Testing

/// Issue 18: `rbuild bake`, as an unprivileged user: HCL, JSON and compose files, every target of
/// a run in one process.
@Suite("rbuild bake, as an unprivileged user", .enabled(if: Env.enabled))
struct BakeTests {
    static let dockerfile = """
        FROM busybox AS shared
        ARG BASE_NOTE
        RUN echo "RAN-SHARED $BASE_NOTE" && echo "shared $BASE_NOTE" > /shared.txt && date +%s%N > /stamp
        FROM shared AS app
        ARG EXTRA
        COPY --from=deps /deps.txt /deps.txt
        RUN echo "extra=$EXTRA" > /extra.txt
        FROM shared AS tools
        ARG V
        RUN echo "tool $V" > /tool.txt
        """

    static let hcl = """
        variable "TAG" { default = "dev" }
        variable "WITH_EXTRA" { default = false }
        group "default" { targets = ["app", "tools"] }
        target "base" {
          context = "."
          dockerfile = "Dockerfile"
          args = { BASE_NOTE = "from-base" }
        }
        target "app" {
          inherits = ["base"]
          target = "app"
          tags = ["app:${TAG}"]
          contexts = { deps = "target:deps" }
          args = { EXTRA = WITH_EXTRA ? "yes" : "no" }
          output = ["type=local,dest=out/app"]
        }
        target "deps" {
          dockerfile-inline = "FROM busybox\\nRUN echo deps > /deps.txt\\n"
        }
        target "tools" {
          inherits = ["base"]
          name = "tools-${v}"
          matrix = { v = ["a", "b"] }
          target = "tools"
          args = { V = v }
          output = ["type=local,dest=out/tools-${v}"]
        }
        """

    static let json = """
        {
          "variable": {"TAG": {"default": "dev"}, "WITH_EXTRA": {"default": false}},
          "group": {"default": {"targets": ["app", "tools"]}},
          "target": {
            "base": {"context": ".", "dockerfile": "Dockerfile", "args": {"BASE_NOTE": "from-base"}},
            "app": {"inherits": ["base"], "target": "app", "tags": ["app:${TAG}"], "contexts": {"deps": "target:deps"},
                    "args": {"EXTRA": "${WITH_EXTRA ? \\"yes\\" : \\"no\\"}"}, "output": ["type=local,dest=out/app"]},
            "deps": {"dockerfile-inline": "FROM busybox\\nRUN echo deps > /deps.txt\\n"},
            "tools": {"inherits": ["base"], "name": "tools-${v}", "matrix": {"v": ["a", "b"]}, "target": "tools",
                      "args": {"V": "${v}"}, "output": ["type=local,dest=out/tools-${v}"]}
          }
        }
        """

    /// `rbuild bake` in `dir` (the files found there, or -f), as this user.
    func bake(_ b: BuildFixture, _ dir: String, _ args: [String], env extra: [String: String] = [:]) throws -> Result {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in extra { env[k] = v }
        let cd = "cd \"$1\" && shift && exec \"$@\""
        return try runProcess("/bin/sh", ["-c", cd, "sh", dir, Env.binary, "bake"] + b.root + ["--progress", "plain"] + args, environment: env)
    }

    /// The HCL and the JSON form of one definition: variables from the environment (a string and
    /// a bool), a group, inherits, a matrix, a `target:` context; the step the targets share runs
    /// once (one /stamp in every result, its output printed once).
    @Test(arguments: ["docker-bake.hcl", "docker-bake.json"])
    func hclAndJSON(_ file: String) throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": Self.dockerfile, file: file.hasSuffix(".hcl") ? Self.hcl : Self.json], name: "ctx-" + file)
        let r = try bake(b, ctx, [], env: ["TAG": "1.2", "WITH_EXTRA": "true"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.file(ctx + "/out/app/deps.txt") == "deps\n")
        #expect(try b.file(ctx + "/out/app/extra.txt") == "extra=yes\n")
        #expect(try b.file(ctx + "/out/app/shared.txt") == "shared from-base\n")
        #expect(try b.file(ctx + "/out/tools-a/tool.txt") == "tool a\n")
        #expect(try b.file(ctx + "/out/tools-b/tool.txt") == "tool b\n")
        let stamps = try ["app", "tools-a", "tools-b"].map { try b.file(ctx + "/out/\($0)/stamp") }
        #expect(Set(stamps).count == 1, "the shared step ran once: \(stamps)")
        let ran = r.stderr.split(separator: "\n").filter { $0.contains("RAN-SHARED from-base") && !$0.contains("RUN echo") }
        #expect(ran.count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("[app ") && r.stderr.contains("[tools-a ") && r.stderr.contains("[tools-b "), "steps name their target: \(r.stderr)")
        // --print: the resolved targets as buildx prints them.
        let printed = try bake(b, ctx, ["--print", "app"], env: ["TAG": "1.2"])
        #expect(printed.status == 0, "\(printed.stderr)")
        let doc = try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any]
        let app = (doc?["target"] as? [String: Any])?["app"] as? [String: Any]
        #expect(app?["tags"] as? [String] == ["app:1.2"], "\(printed.stdout)")
        #expect((app?["contexts"] as? [String: String])?["deps"] == "target:deps")
        #expect(app?["context"] as? String == ".")
        // --set with a glob.
        let set = try bake(b, ctx, ["--print", "--set", "tools-*.args.V=z", "tools"])
        let targets = (try JSONSerialization.jsonObject(with: Data(set.stdout.utf8)) as? [String: Any])?["target"] as? [String: Any]
        #expect(((targets?["tools-a"] as? [String: Any])?["args"] as? [String: String])?["V"] == "z", "\(set.stdout) \(set.stderr)")
        #expect(((targets?["tools-b"] as? [String: Any])?["args"] as? [String: String])?["V"] == "z")
    }

    /// A compose file: two services built from one Dockerfile whose base stage they share (it runs
    /// once), `image` as the tag; a service without `build` is skipped.
    @Test func compose() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS base
            RUN echo RAN-BASE && date +%s%N > /stamp
            FROM base AS web
            RUN echo web > /role
            FROM base AS worker
            ARG MODE
            RUN echo "worker $MODE" > /role
            """, "compose.yaml": """
            services:
              web:
                build:
                  context: .
                  target: web
                image: web:1
              worker:
                build:
                  context: .
                  target: worker
                  args:
                    MODE: fast
                image: worker:1
              db:
                image: postgres:16
            """], name: "compose")
        let r = try bake(b, ctx, [])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").filter { $0.hasSuffix(" RAN-BASE") }.count == 1, "the base ran once: \(r.stderr)")
        #expect(try b.sh("web:1", "cat /role") == "web\n")
        #expect(try b.sh("worker:1", "cat /role") == "worker fast\n")
        #expect(try b.sh("web:1", "cat /stamp") == b.sh("worker:1", "cat /stamp"))
    }

    /// A target that fails fails the run (exit 1, naming it); the others finish.
    @Test func failingTarget() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nARG FAIL=0\nRUN test $FAIL = 0 && echo ok > /ok\n", "docker-bake.hcl": """
            group "default" { targets = ["good", "bad"] }
            target "good" { output = ["type=local,dest=out/good"] }
            target "bad" {
              args = { FAIL = "1" }
              output = ["type=local,dest=out/bad"]
            }
            """], name: "failing")
        let r = try bake(b, ctx, [])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("target bad failed"), "\(r.stderr)")
        #expect(try b.file(ctx + "/out/good/ok") == "ok\n")
        #expect(!FileManager.default.fileExists(atPath: ctx + "/out/bad"))
    }

    /// A broken file: the error names the file, line and column, exit 1, nothing built.
    @Test func parseErrors() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\n", "docker-bake.hcl": "target \"a\" {\n  tags = [\"x\",\n}\n"], name: "broken")
        let r = try bake(b, ctx, [])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("docker-bake.hcl:3:"), "\(r.stderr)")
        let none = try b.context(["Dockerfile": "FROM busybox\n"], name: "nofile")
        let missing = try bake(b, none, [])
        #expect(missing.status == 1 && missing.stderr.contains("no bake file found"), "\(missing.stderr)")
    }
}
