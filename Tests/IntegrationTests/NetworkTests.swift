import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A web server on the host's 127.0.0.1, at a port the kernel picked, serving one file
/// (`marker`) and `files` for as long as the value lives: what a build step must not reach
/// unless it runs on the host's network, or what ADD downloads.
final class LoopbackServer {
    let process = Process()
    let dir: String
    let port: Int
    let marker = "host-only-\(UInt64.random(in: 0...UInt64.max))"

    init(files: [String: String] = [:]) throws {
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        dir = tmp + "/rbuild-http-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try marker.write(toFile: dir + "/marker", atomically: false, encoding: .utf8)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: false, encoding: .utf8) }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", """
            import http.server, os, sys
            os.chdir(sys.argv[1])
            class Quiet(http.server.SimpleHTTPRequestHandler):
                def log_message(self, *args): pass
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
            print(server.server_port, flush=True)
            server.serve_forever()
            """, dir]
        port = try startReportingPort(process, name: "python3's http.server (is python3 installed?)")
        // The server answers here before any build step tries it.
        let check = try runProcess("/usr/bin/python3", ["-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                                       "http://127.0.0.1:\(port)/marker"])
        guard check.stdout.trimmed == marker else {
            kill(process.processIdentifier, SIGKILL)
            throw FixtureError(message: "the loopback server does not answer: \(check.stderr)")
        }
    }

    deinit {
        // SIGKILL: the test runner's threads block SIGTERM, and a spawned process inherits that.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// The environment that makes rbuild use `helper` for RUN's own network.
func helperEnvironment(_ helper: String) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["RBUILD_NETWORK_HELPER"] = helper
    return env
}

@Suite("RUN's network: its own by default, the host's only when allowed", .enabled(if: Env.enabled))
struct NetworkTests {
    static let helpers = ["slirp4netns", "pasta"]

    @Test("a default RUN reaches neither the host's 127.0.0.1 nor the host through its gateway", arguments: helpers)
    func defaultNetworkKeepsTheHostLoopbackOut(helper: String) throws {
        let server = try LoopbackServer()
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            ARG PORT
            RUN for a in 127.0.0.1 $(ip route | awk '/^default/ {print $3}'); do \\
                  if timeout 3 wget -q -O- http://$a:$PORT/marker; then echo " reached $a"; else echo "refused $a"; fi; \\
                done > /result; ls /sys/class/net > /interfaces; grep ^nameserver /etc/resolv.conf > /resolv
            """])
        let r = try b.build(["--build-arg", "PORT=\(server.port)", "-o", "type=local,dest=\(b.fs.dir)/out"], ctx,
                            environment: helperEnvironment(helper))
        #expect(r.status == 0, "\(r.stderr)")
        let result = try b.file(b.fs.dir + "/out/result")
        #expect(!result.contains("reached") && !result.contains(server.marker), "\(result)")
        #expect(result.split(separator: "\n").count == 2, "loopback and the gateway were both tried: \(result)")
        let interfaces = try b.file(b.fs.dir + "/out/interfaces").split(separator: "\n")
        #expect(interfaces.contains("lo") && interfaces.count == 2, "\(interfaces)")
        let resolv = try b.file(b.fs.dir + "/out/resolv")
        #expect(resolv.hasPrefix(helper == "slirp4netns" ? "nameserver 10.0.2.3\n" : "nameserver 169.254.1.1\n"), "\(resolv)")
    }

    @Test("RUN --network=host reaches the host's 127.0.0.1 with --allow network.host; without it the build fails before running")
    func hostNetworkNeedsTheEntitlement() throws {
        let server = try LoopbackServer()
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            ARG PORT
            RUN echo first step > /first
            RUN --network=host timeout 30 wget -q -O- http://127.0.0.1:$PORT/marker > /result
            """])
        let port = ["--build-arg", "PORT=\(server.port)"]
        let denied = try b.build(port, ctx)
        #expect(denied.status == 1)
        #expect(denied.stderr.contains("RUN --network=host needs the network.host entitlement"), "\(denied.stderr)")
        #expect(denied.stderr.contains("--allow network.host") && denied.stderr.contains("Dockerfile:4"), "\(denied.stderr)")
        #expect(!denied.stderr.contains("RUN echo first step"), "a step ran before the check: \(denied.stderr)")

        let allowed = try b.build(port + ["--allow", "network.host", "-o", "type=local,dest=\(b.fs.dir)/out"], ctx)
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(try b.file(b.fs.dir + "/out/result") == server.marker)

        // `--network host` for the whole build is the same privilege.
        let plain = try b.context(["Dockerfile": """
            FROM busybox
            ARG PORT
            RUN timeout 30 wget -q -O- http://127.0.0.1:$PORT/marker > /result
            """], name: "plain")
        let buildWide = try b.build(port + ["--network", "host"], plain)
        #expect(buildWide.status == 1 && buildWide.stderr.contains("--network host needs the network.host entitlement"),
                "\(buildWide.stderr)")
        let granted = try b.build(port + ["--network", "host", "--allow", "network.host", "-o", "type=local,dest=\(b.fs.dir)/out2"], plain)
        #expect(granted.status == 0, "\(granted.stderr)")
        #expect(try b.file(b.fs.dir + "/out2/result") == server.marker)
    }

    @Test("--allow takes network.host only: security.insecure and unknown names are refused")
    func entitlementsRefused() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN true\n"])
        let insecure = try b.build(["--allow", "security.insecure"], ctx)
        #expect(insecure.status != 0 && insecure.stderr.contains("--allow security.insecure: rbuild never grants it"), "\(insecure.stderr)")
        let unknown = try b.build(["--allow", "network.bridge"], ctx)
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown entitlement"), "\(unknown.stderr)")
    }

    @Test("--network=none (in RUN or for the build) has only loopback")
    func noneHasOnlyLoopback() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN --network=none ls /sys/class/net > /run-flag; grep -c nameserver /etc/resolv.conf > /servers || true
            RUN ls /sys/class/net > /build-flag
            """])
        let r = try b.build(["--network", "none", "-o", "type=local,dest=\(b.fs.dir)/out"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.file(b.fs.dir + "/out/run-flag") == "lo\n")
        #expect(try b.file(b.fs.dir + "/out/servers") == "0\n")
        #expect(try b.file(b.fs.dir + "/out/build-flag") == "lo\n")
    }

    @Test("an isolated RUN reaches the outside: DNS through the helper, HTTP to Debian's archive", arguments: helpers)
    func outbound(helper: String) throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN nslookup deb.debian.org > /dns && timeout 120 wget -O /r http://deb.debian.org/debian/dists/bookworm/Release && head -n 5 /r > /release && rm /r
            """])
        let r = try b.build(["-o", "type=local,dest=\(b.fs.dir)/out"], ctx, environment: helperEnvironment(helper))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.file(b.fs.dir + "/out/dns").contains("Address"))
        #expect(try b.file(b.fs.dir + "/out/release").contains("Origin: Debian"))
    }

    @Test("--add-host lands in /etc/hosts and in the step's cache key")
    func addHost() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN tail -n 2 /etc/hosts > /hosts\n"])
        let hosts = ["--add-host", "db:10.9.8.7", "--add-host", "v6=[fd00::7]"]
        let first = try b.build(hosts + ["-o", "type=local,dest=\(b.fs.dir)/out"], ctx)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try b.file(b.fs.dir + "/out/hosts") == "10.9.8.7\tdb\nfd00::7\tv6\n")
        let same = try b.build(hosts, ctx)
        #expect(cachedSteps(same.stderr).contains { $0.contains("RUN tail") }, "\(same.stderr)")
        let other = try b.build(["--add-host", "db:10.9.8.8"], ctx)
        #expect(other.status == 0 && !cachedSteps(other.stderr).contains { $0.contains("RUN tail") }, "\(other.stderr)")
        let bad = try b.build(["--add-host", "db:not-an-ip"], ctx)
        #expect(bad.status != 0 && bad.stderr.contains("'not-an-ip' is not an IPv4 or IPv6 address"), "\(bad.stderr)")
    }

    @Test("the helper dies with rbuild, even when rbuild is killed with SIGKILL", arguments: helpers)
    func helperDiesWithRbuild(helper: String) throws {
        let fs = try Rootfs()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.binary)
        p.arguments = ["run", "--rootfs", fs.path, "--network", "default", "--", "/bin/sleep", "60"]
        p.environment = helperEnvironment(helper)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var found: pid_t?
        waitFor(seconds: 30) {
            found = descendants(of: p.processIdentifier).first { commandLine($0).first?.hasSuffix(helper) == true }
            return found != nil
        }
        guard let pid = found else {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            Issue.record("no \(helper) process appeared under rbuild")
            return
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let gone = waitFor(seconds: 30) { processState(pid).map { $0 == "Z" || $0 == "X" } ?? true }
        #expect(gone, "\(helper) (pid \(pid)) outlived rbuild")
    }

    @Test("rbuild info names the helper in use", arguments: helpers)
    func info(helper: String) throws {
        let r = try rbuild(["info", "--format", "json"], environment: helperEnvironment(helper))
        #expect(r.status == 0)
        #expect(r.stdout.contains("\"kind\" : \"\(helper)\""), "\(r.stdout)")
        let text = try rbuild(["info"], environment: helperEnvironment(helper))
        #expect(text.stdout.split(separator: "\n").contains { $0.contains("network helper") && $0.contains("yes  \(helper)") }, "\(text.stdout)")
    }

    @Test("a helper that fails or cannot start fails the step with its own words")
    func failingHelper() throws {
        let fs = try Rootfs()
        for (name, script) in [("exits", "#!/bin/sh\necho 'fake helper: cannot do that' >&2\nexit 3\n"),
                               ("noexec", "#!/nonexistent/interpreter\n")] {
            let dir = fs.dir + "/fake-" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try script.write(toFile: dir + "/slirp4netns", atomically: false, encoding: .utf8)
            chmod(dir + "/slirp4netns", 0o755)
            var env = helperEnvironment("slirp4netns")
            env["PATH"] = dir + ":" + (env["PATH"] ?? "/usr/bin:/bin")
            let r = try rbuild(["run", "--rootfs", fs.path, "--network", "default", "--", "true"], environment: env)
            #expect(r.status == 125, "\(r.stderr)")
            #expect(r.stderr.contains(name == "exits"
                ? "slirp4netns could not set up the sandbox's network: it exited with status 3: fake helper: cannot do that"
                : "cannot start \(dir)/slirp4netns: No such file or directory"), "\(r.stderr)")
        }
    }

    @Test("a bad RBUILD_NETWORK_HELPER fails the isolated step with what it expects; --network none needs no helper")
    func forcedHelperUnknown() throws {
        let fs = try Rootfs()
        var env = ProcessInfo.processInfo.environment
        env["RBUILD_NETWORK_HELPER"] = "vpnkit"
        let r = try rbuild(["run", "--rootfs", fs.path, "--network", "default", "--", "true"], environment: env)
        #expect(r.status == 125 && r.stderr.contains("RBUILD_NETWORK_HELPER=vpnkit: expected slirp4netns or pasta"), "\(r.stderr)")
        let none = try rbuild(["run", "--rootfs", fs.path, "--network", "none", "--", "true"], environment: env)
        #expect(none.status == 0, "\(none.stderr)")
    }
}

/// Every process below `root` (children, their children, …), from /proc.
func descendants(of root: pid_t) -> [pid_t] {
    var children: [pid_t: [pid_t]] = [:]
    for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        // pid (comm) state ppid …: comm may hold spaces, so fields are counted after its ')'.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, let ppid = pid_t(fields[1]) { children[ppid, default: []].append(pid) }
    }
    var out: [pid_t] = [], queue = [root]
    while let p = queue.popLast() {
        for c in children[p] ?? [] {
            out.append(c)
            queue.append(c)
        }
    }
    return out
}

func commandLine(_ pid: pid_t) -> [String] {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
    return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
}

/// The state letter of /proc/PID/stat (R, S, Z…), or nil when the process is gone.
func processState(_ pid: pid_t) -> String? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init)
}
