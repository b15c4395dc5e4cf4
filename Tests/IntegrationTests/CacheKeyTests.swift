import Foundation
import Testing

/// Issue 14 (in part): image-config-only instructions stay out of the cache keys, as in BuildKit.
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
}
