import Foundation
import RBuild
import Testing

/// Parsing of `du`/`prune` filters and sizes: no privilege, no binary.
struct UsageFilterTests {
    @Test(arguments: [("24h", 86400.0), ("2h30m", 9000), ("90s", 90), ("1.5h", 5400), ("10m", 600), ("500ms", 0.5)])
    func durations(_ text: String, _ seconds: Double) {
        #expect(parseDuration(text) == seconds)
    }

    @Test(arguments: ["", "h", "24", "1d", "3x"])
    func notDurations(_ text: String) { #expect(parseDuration(text) == nil) }

    @Test func filters() throws {
        let f = try UsageFilter.parse(["until=24h", "type=regular", "type=exec.cachemount"])
        #expect(f.until == 86400 && f.types == ["regular", "exec.cachemount"])
        let now = Date()
        let old = DiskUsage.Item(kind: "regular", name: "abc", bytes: 1, kept: true, lastUsed: now.addingTimeInterval(-90000))
        var recent = old
        recent.lastUsed = now
        var snap = old
        snap.kind = "snapshots"
        #expect(f.matches(old, now: now) && !f.matches(recent, now: now) && !f.matches(snap, now: now))
        #expect(try UsageFilter.parse(["id=ab"]).matches(old, now: now))
        #expect(throws: (any Error).self) { try UsageFilter.parse(["type=nope"]) }
        #expect(throws: (any Error).self) { try UsageFilter.parse(["until=soon"]) }
        #expect(throws: (any Error).self) { try UsageFilter.parse(["label=x"]) }
        #expect(byteSize("10GB") == 10 << 30 && byteSize("512m") == 512 << 20 && byteSize("lots") == nil)
    }
}

@Suite("history, du, prune filters, tag and build's shorthands, as an unprivileged user", .enabled(if: Env.enabled))
struct HistoryTests {
    @Test func historyOfFailedAndCachedBuilds() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo hello-from-run\nRUN echo broke >&2; exit 3\n"])
        #expect(try b.build([], ctx).status == 1)
        try "FROM busybox\nRUN echo hello-from-run\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let ok = try b.build(["-t", "h:1"], ctx)
        #expect(ok.status == 0, "\(ok.stderr)")

        let ls = try rbuild(["history", "ls", "--format", "json"] + b.root)
        let records = ls.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(records.count == 2, "\(ls.stdout)")
        #expect(records.map { $0["status"] as? String } == ["completed", "failed"])
        #expect(records[0]["cachedSteps"] as? Int == 1)   // the RUN the failed build ran
        #expect(records[0]["tags"] as? [String] == ["h:1"])
        #expect((records[1]["error"] as? String)?.contains("exit code: 3") == true)
        let table = try rbuild(["history", "ls"] + b.root)
        #expect(table.stdout.hasPrefix("BUILD ID") && table.stdout.contains("Completed") && table.stdout.contains("Error"), "\(table.stdout)")

        let inspect = try rbuild(["history", "inspect", "^1"] + b.root)
        #expect(inspect.status == 0 && inspect.stdout.contains("Status:         Error"), "\(inspect.stdout)\(inspect.stderr)")
        #expect(inspect.stdout.contains("Build Steps:    5/5 (0% cached)") && inspect.stdout.contains("exit code: 3"), "\(inspect.stdout)")
        let latest = try rbuild(["history", "inspect", "--format", "json"] + b.root)
        #expect(latest.stdout.contains("\"status\" : \"completed\""), "\(latest.stdout)")

        // The logs are the plain progress again: the failed build's output and error included.
        let logs = try rbuild(["history", "logs", "^1"] + b.root)
        #expect(logs.stdout.contains("RUN echo broke >&2; exit 3") && logs.stdout.contains(" broke\n") && logs.stdout.contains("ERROR:"), "\(logs.stdout)")
        let cachedLog = try rbuild(["history", "logs", String((records[0]["id"] as? String ?? "").prefix(6))] + b.root)
        #expect(cachedLog.stdout.contains("CACHED") && cachedLog.stdout.contains("naming to h:1"), "\(cachedLog.stdout)")
        #expect(try rbuild(["history", "logs", "^5"] + b.root).stderr.contains("only 2 builds recorded"))

        // A build killed outright leaves a record that shows canceled, and the list still reads.
        let slow = try b.context(["Dockerfile": "FROM busybox\nRUN sleep 30\n"], name: "slow")
        try b.killBuild(slow, once: "RUN sleep 30")
        // (Its process in rbuild's user namespace may take a moment to go.)
        var after = try rbuild(["history", "ls", "--format", "json"] + b.root)
        waitFor(seconds: 30) {
            if after.stdout.contains("\"status\":\"canceled\"") { return true }
            if let list = try? rbuild(["history", "ls", "--format", "json"] + b.root) { after = list }
            return false
        }
        #expect(after.stdout.split(separator: "\n").count == 3)
        #expect(after.stdout.split(separator: "\n").first?.contains("\"status\":\"canceled\"") == true, "\(after.stdout)")

        #expect(try rbuild(["history", "rm", "^0", "^1"] + b.root).status == 0)
        #expect(try rbuild(["history", "ls", "--format", "json"] + b.root).stdout.split(separator: "\n").count == 1)
        #expect(try rbuild(["history", "rm", "--all"] + b.root).status == 0)
        #expect(try rbuild(["history", "inspect"] + b.root).stderr.contains("no builds recorded"))
    }

    /// The history is trimmed to the newest `keep` records once a build makes more than
    /// `trimAt`, and left alone below that (trimming reads every record).
    @Test func historyIsTrimmedPastItsLimit() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\n"])
        let dir = b.state + "/history"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Old records as a build writes them: a day apart from 2020 on.
        func fake(_ i: Int) throws {
            let id = "old" + String(format: "%022d", i)
            let started = Date(timeIntervalSince1970: 1_577_836_800 + Double(i) * 86400)
            let record: [String: Any] = [
                "id": id, "name": "ctx", "status": "completed", "startedAt": ISO8601DateFormatter().string(from: started),
                "pid": 1, "platforms": ["linux/amd64"], "outputs": [], "tags": [], "steps": 1, "completedSteps": 1,
                "cachedSteps": 0, "logDroppedBytes": 0]
            try JSONSerialization.data(withJSONObject: record).write(to: URL(fileURLWithPath: "\(dir)/\(id).json"))
        }
        func ids() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
        }
        for i in 10..<(BuildHistory.keep + 14) { try fake(i) }   // 104 records
        #expect(try b.build([], ctx).status == 0)   // 105: past keep, not past trimAt
        #expect(try ids().count == BuildHistory.keep + 5, "up to trimAt nothing is removed")
        #expect(try rbuild(["history", "ls", "--format", "json"] + b.root).stdout.split(separator: "\n").count == BuildHistory.keep + 5)

        for i in 0..<10 { try fake(i) }   // 115 records, the oldest of them new files
        #expect(try b.build([], ctx).status == 0)   // 116 > trimAt: back to keep
        let left = try ids()
        #expect(left.count == BuildHistory.keep, "\(left.count)")
        #expect(left.filter { !$0.hasPrefix("old") }.count == 2, "both real builds are the newest and stay")
        let oldest = left.filter { $0.hasPrefix("old") }.sorted().first
        #expect(oldest == "old" + String(format: "%022d", 16), "the 16 oldest went, by start time, not by file age")
    }

    /// Each bake target leaves a record of its own steps; a target's annotations are written.
    @Test func bakeTargetsRecordAndAnnotate() throws {
        let b = try BuildFixture()
        let hcl = """
            target "one" {
              output = ["type=oci,dest=one.tar"]
              annotations = ["org.opencontainers.image.title=first"]
            }
            target "two" {
              dockerfile-inline = "FROM busybox\\nRUN echo two > /two\\n"
              output = ["type=cacheonly"]
            }
            group "default" { targets = ["one", "two"] }
            """
        let dir = try b.context(["Dockerfile": "FROM busybox\nRUN echo one > /one\n", "docker-bake.hcl": hcl], name: "bake")
        let r = try BakeTests().bake(b, dir, [])
        #expect(r.status == 0, "\(r.stderr)")
        let ls = try rbuild(["history", "ls", "--format", "json"] + b.root).stdout.split(separator: "\n")
        #expect(ls.count == 2 && ls.contains { $0.contains("\"name\":\"one\"") } && ls.contains { $0.contains("\"name\":\"two\"") }, "\(ls)")
        let one = try rbuild(["history", "logs", ls.first { $0.contains("\"name\":\"one\"") }.map { String($0.split(separator: "\"id\":\"")[1].prefix(25)) } ?? "?"] + b.root)
        #expect(one.stdout.contains("RUN echo one") && !one.stdout.contains("RUN echo two"), "\(one.stdout)\(one.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:\(dir)/one.tar"])
        #expect(raw.stdout.contains("\"org.opencontainers.image.title\":\"first\""), "\(raw.stdout)\(raw.stderr)")
    }

    @Test func duAndPruneFilters() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN --mount=type=cache,id=c1,target=/c echo x > /c/x\nRUN echo one > /one\n"])
        #expect(try b.build([], ctx).status == 0)   // no output: only the cache holds the layers

        let du = try rbuild(["du", "--verbose", "--filter", "type=regular"] + b.root)
        #expect(du.status == 0, "\(du.stderr)")
        #expect(du.stdout.contains("Description:  [3/3] RUN echo one > /one") && du.stdout.contains("Last used:"), "\(du.stdout)")
        #expect(!du.stdout.contains("exec.cachemount"))
        #expect(try rbuild(["du"] + b.root).stdout.contains("exec.cachemount: 1 record"))

        // Everything was used just now: until=1h selects nothing.
        let none = try rbuild(["prune", "--filter", "until=1h"] + b.root)
        #expect(none.stdout.contains("Deleted 0 cached steps") && none.stdout.contains("Deleted 0 cache mounts"), "\(none.stdout)\(none.stderr)")
        let warm = try b.build([], ctx)
        #expect(cachedSteps(warm.stderr).count == 2, "\(warm.stderr)")

        // A budget of 0 takes every record, least recently used first; the layers go with them.
        let all = try rbuild(["prune", "--keep-storage", "0"] + b.root)
        #expect(all.stdout.contains("Deleted 2 cached steps") && all.stdout.contains("Deleted 1 cache mounts"), "\(all.stdout)\(all.stderr)")
        #expect(!all.stdout.contains("Deleted 0 blobs"), "\(all.stdout)")
        #expect(!(try rbuild(["du"] + b.root)).stdout.contains("regular"))
        let cold = try b.build([], ctx)
        #expect(cold.status == 0 && cachedSteps(cold.stderr).isEmpty, "\(cold.stderr)")

        #expect(try rbuild(["prune", "--filter", "type=snapshots"] + b.root).status == 0)
        #expect(!(try rbuild(["du"] + b.root)).stdout.contains("snapshots"))
        let bad = try rbuild(["prune", "--filter", "until=soon"] + b.root)
        #expect(bad.status != 0 && bad.stderr.contains("until=soon"), "\(bad.stderr)")
        #expect(try rbuild(["prune", "--keep-storage", "lots"] + b.root).status != 0)
    }

    @Test func tagAndShorthands() throws {
        let b = try BuildFixture()
        #expect(try rbuild(["tag"] + b.root + ["busybox", "mine/box:2"]).status == 0)
        let images = try rbuild(["images"] + b.root).stdout
        let digests = images.split(separator: "\n").filter { $0.hasPrefix("busybox:latest") || $0.hasPrefix("mine/box:2") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true)[1] }
        #expect(digests.count == 2 && digests[0] == digests[1], "\(images)")
        #expect(try rbuild(["tag"] + b.root + ["nothing:1", "x"]).stderr.contains("no such image: nothing:1"))

        // --load: the Docker archive goes to `docker load` (a stand-in here), else a clear error.
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo loaded > /l\n"])
        let bin = b.fs.dir + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\ncp \"$3\" \"$FAKE_OUT\" && echo \"Loaded image: $1\"\n".write(toFile: bin + "/docker", atomically: false, encoding: .utf8)
        chmod(bin + "/docker", 0o755)
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = bin + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        env["FAKE_OUT"] = b.fs.dir + "/loaded.tar"
        let load = try b.build(["--load", "-t", "ld:1"], ctx, environment: env)
        #expect(load.status == 0 && load.stderr.contains("Loaded image: load"), "\(load.stderr)")
        let tar = try runProcess("/bin/tar", ["xOf", b.fs.dir + "/loaded.tar", "manifest.json"])
        #expect(tar.stdout.contains("\"RepoTags\":[\"ld:1\"]") || tar.stdout.contains("ld:1"), "\(tar.stdout)\(tar.stderr)")
        let empty = b.fs.dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        env["PATH"] = empty
        let missing = try b.build(["--load"], ctx, environment: env)
        #expect(missing.status == 1 && missing.stderr.contains("neither docker nor podman is on PATH"), "\(missing.stderr)")

        // --shm-size and --ulimit reach RUN steps (and are part of their keys: a new size runs again).
        try "FROM busybox\nRUN df -k /dev/shm | tail -1 | awk '{print $2}' > /shm; ulimit -n > /nofile; ulimit -Hn >> /nofile\n"
            .write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let limited = try b.build(["--shm-size", "128m", "--ulimit", "nofile=512:1024", "-t", "lim:1"], ctx)
        #expect(limited.status == 0, "\(limited.stderr)")
        #expect(try b.sh("lim:1", "cat /shm /nofile") == "131072\n512\n1024\n")
        let other = try b.build(["--shm-size", "96m", "--ulimit", "nofile=512:1024", "-t", "lim:2"], ctx)
        #expect(other.status == 0 && cachedSteps(other.stderr).isEmpty, "\(other.stderr)")
        #expect(try b.sh("lim:2", "cat /shm") == "98304\n")
        let above = try b.build(["--ulimit", "nofile=64:\(UInt64(Int32.max) * 4)"], ctx)
        #expect(above.status != 0 && above.stderr.contains("cannot raise a hard limit"), "\(above.stderr)")

        let cgroup = try b.build(["--cgroup-parent", "x.slice"], ctx)
        #expect(cgroup.status == 1 && cgroup.stderr.contains("does not manage cgroups"), "\(cgroup.stderr)")

        try "# ANSWER the answer\nARG ANSWER=42\n# final is what ships\nFROM busybox AS final\nARG ANSWER\nRUN --mount=type=secret,id=tok true\n"
            .write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let outline = try b.build(["--call", "outline"], ctx)
        #expect(outline.status == 0 && outline.stdout.contains("ANSWER      42      the answer") && outline.stdout.contains("tok"), "\(outline.stdout)\(outline.stderr)")
        let targets = try b.build(["--call", "targets,format=json"], ctx)
        let list = try JSONSerialization.jsonObject(with: Data(targets.stdout.utf8)) as? [[String: Any]]
        #expect(list?.first?["description"] as? String == "is what ships", "\(targets.stdout)")
        #expect(try b.build(["--call", "nope"], ctx).status != 0)
    }
}
