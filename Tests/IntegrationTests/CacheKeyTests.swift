import Foundation
import RBuild
import Testing

/// The cache keys of the op graph: image-config-only instructions stay out (as in BuildKit), cached
/// steps leave what they read alone, and no key depends on who builds or where.
@Suite("cache keys leave image-config instructions out", .enabled(if: Env.enabled))
struct CacheKeyTests {
    func dockerfile(version: String, port: String, env: String) -> String {
        """
        FROM busybox
        LABEL version=\(version)
        MAINTAINER someone-\(version)
        EXPOSE \(port)
        ENV A=\(env)
        RUN echo "run $A" > /a
        CMD ["echo", "\(version)"]
        COPY f /f
        RUN cat /f /a > /g
        """
    }

    @Test func labelCmdExposeKeepLaterStepsCached() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": dockerfile(version: "1", port: "80", env: "1")])
        let first = try b.build(["-t", "app:1"], ctx)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(cachedSteps(first.stderr).isEmpty)

        try dockerfile(version: "2", port: "8080", env: "1").write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let second = try b.build(["-t", "app:2"], ctx)
        #expect(second.status == 0, "\(second.stderr)")
        let cached = cachedSteps(second.stderr)
        #expect(cached.contains { $0.contains("RUN echo \"run $A\"") } && cached.contains { $0.contains("COPY f /f") }
                && cached.contains { $0.contains("RUN cat /f /a") }, "\(second.stderr)")
        let config = try rbuild(["inspect"] + b.root + ["app:2"]).stdout
        #expect(config.contains("\"version\" : \"2\"") || config.contains("\"version\":\"2\""), "\(config)")
        #expect(config.contains("8080/tcp"), "\(config)")

        // What a RUN step sees is in its key: a new ENV value runs it (and what follows) again.
        try dockerfile(version: "2", port: "8080", env: "2").write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let third = try b.build(["-o", "type=local,dest=\(b.fs.dir)/out"], ctx)
        #expect(third.status == 0, "\(third.stderr)")
        #expect(!cachedSteps(third.stderr).contains { $0.contains("RUN") }, "\(third.stderr)")
        #expect(try b.file(b.fs.dir + "/out/g") == "f\nrun 2\n")
    }

    /// The same step on the same base in two stages has one key: it runs once (the stages run
    /// at once, the second waits for the first's result) and both stages get its layer.
    @Test func sameStepInTwoStagesRunsOnce() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS base
            RUN echo base > /base
            FROM base AS a
            RUN sleep 1; cat /proc/sys/kernel/random/uuid > /t
            FROM base AS b
            RUN sleep 1; cat /proc/sys/kernel/random/uuid > /t
            FROM busybox
            COPY --from=a /t /a
            COPY --from=b /t /b
            """], name: "twostages")
        let r = try b.build(["-o", "type=local,dest=\(b.fs.dir)/two"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let a = try b.file(b.fs.dir + "/two/a"), bb = try b.file(b.fs.dir + "/two/b")
        #expect(!a.isEmpty && a == bb, "one run for both stages: \(a) vs \(bb)")
    }

    /// A cached step needs nothing it reads: on a warm rebuild whose `COPY --from=build` hits the
    /// cache, the build stage is never visited — none of its steps shows, nothing of it is
    /// unpacked, pulled or run.
    @Test func cachedCopyFromAStageLeavesTheStageAlone() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS build
            RUN echo built > /out
            FROM busybox
            COPY --from=build /out /out
            RUN cat /out > /copy
            """], name: "lazy")
        let first = try b.build(["-o", "type=local,dest=\(b.fs.dir)/lazy1"], ctx)
        #expect(first.status == 0 && first.stderr.contains("RUN echo built"), "\(first.stderr)")
        let second = try b.build(["-o", "type=local,dest=\(b.fs.dir)/lazy2"], ctx)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(!second.stderr.contains("RUN echo built"), "the build stage was visited: \(second.stderr)")
        #expect(cachedSteps(second.stderr).contains { $0.contains("COPY --from=build /out /out") }, "\(second.stderr)")
        #expect(try b.file(b.fs.dir + "/lazy2/copy") == "built\n")
    }

    /// Keys hold no trace of who builds, where the state dir or the context is, or how ids are
    /// mapped: the same Dockerfile and files give these keys in every state dir, as rbuild-sub
    /// (subordinate ids) and as rbuild-nosub (one id) alike. If the canonical encoding changes
    /// on purpose, every cache is cold once: update the constants then.
    @Test func keysAreTheSameForEveryUserAndStateDir() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM scratch
            LABEL any=thing
            COPY f /f
            WORKDIR /app
            RUN echo not run
            """, "f": "the same bytes\n"], name: "keys")
        chmod(ctx + "/f", 0o644)
        var options = BuildOptions()
        options.contextDirectory = ctx
        try Builder.load(dockerfile: ctx + "/Dockerfile", into: &options)
        options.platform = try Platform(parsing: "linux/amd64")
        for state in ["one", "two"] {
            let keys = try Builder(stateDirectory: b.fs.dir + "/keys-state-" + state).cacheKeys(options)
            #expect(keys.map(\.step) == ["[3/5] COPY f /f", "[4/5] WORKDIR /app", "[5/5] RUN echo not run"])
            #expect(keys.map { String($0.key.hex.prefix(16)) } == Self.goldenKeys, "\(keys)")
        }
    }

    static let goldenKeys = ["8bef1db465cbd362", "18df05432101fae0", "103f5daf92a503db"]

    /// Ops, not stages, are scheduled: two stages a final stage copies from run at once. They
    /// meet in a shared cache mount, each waiting for the other's mark (no clock: one after the
    /// other, the first waits 60 s in vain and fails the build).
    @Test func independentStagesRunAtOnce() throws {
        let b = try BuildFixture()
        func meet(_ mine: String, _ other: String) -> String {
            "RUN --mount=type=cache,id=meet,target=/c touch /c/\(mine); i=0; "
                + "while [ ! -e /c/\(other) ]; do i=$((i+1)); [ $i -le 600 ] || exit 9; sleep 0.1; done; echo \(mine) > /\(mine)"
        }
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS a
            \(meet("a", "b"))
            FROM busybox AS b
            \(meet("b", "a"))
            FROM busybox
            COPY --from=a /a /a
            COPY --from=b /b /b
            """], name: "parallel")
        let r = try b.build(["-o", "type=local,dest=\(b.fs.dir)/par"], ctx)
        #expect(r.status == 0, "the two stages ran one after the other: \(r.stderr)")
        #expect(try b.file(b.fs.dir + "/par/a") == "a\n" && b.file(b.fs.dir + "/par/b") == "b\n")
    }
}
