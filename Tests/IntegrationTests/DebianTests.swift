import Foundation
import Testing

/// A real package manager in a real Debian root (fixtures/debian-bookworm-amd64.tar, which
/// scripts/make-fixtures makes with debootstrap when run as root). apt drops to `_apt` (uid 42)
/// and dpkg chowns files to their packages' owners: with a subordinate range those ids exist;
/// in single-id mode the sandbox fakes those calls (FakeIDs, SeccompProfile.idChangingSyscalls).
@Suite("Debian package managers, as an unprivileged user", .enabled(if: Env.enabled))
struct DebianTests {
    static let tarball = Env.fixtures + "/debian-bookworm-amd64.tar"

    /// A state dir with the fixture imported as debian:bookworm, or nil (skip) when the fixture
    /// is missing; scripts/test (RBUILD_REQUIRE_SNAPSHOTTERS=1) makes a missing fixture a failure.
    func importedDebian(_ fs: Rootfs) throws -> String? {
        guard FileManager.default.fileExists(atPath: Self.tarball) else {
            if Env.vars["RBUILD_REQUIRE_SNAPSHOTTERS"] == "1" {
                Issue.record("the Debian fixture \(Self.tarball) is missing: run scripts/make-fixtures as root (it needs debootstrap)")
            } else {
                print("DebianTests: skipped: \(Self.tarball) is missing (run scripts/make-fixtures as root)")
            }
            return nil
        }
        let state = fs.dir + "/state"
        let r = try rbuild(["import", "--root", state, Self.tarball, "debian:bookworm"])
        #expect(r.status == 0, "import: \(r.stderr)")
        return r.status == 0 ? state : nil
    }

    /// `importedDebian` and a context directory holding `dockerfile`; nil (skip) as there.
    func debianContext(_ dockerfile: String) throws -> (fs: Rootfs, state: String, context: String)? {
        let fs = try Rootfs()
        guard let state = try importedDebian(fs) else { return nil }
        let context = fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try dockerfile.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
        return (fs, state, context)
    }

    @Test("the fixture keeps Debian's shapes: _apt is uid 42, apt's partial dir is 0700 _apt, /root 0700")
    func fixtureShapes() throws {
        let fs = try Rootfs()
        guard let state = try importedDebian(fs) else { return }
        let r = try rbuild(["run", "--root", state, "debian:bookworm", "--", "/bin/sh", "-c",
                            "getent passwd _apt | cut -d: -f3; stat -c %a /root /var/cache/apt/archives/partial; ls /var/lib/apt/lists | grep -v partial | wc -l"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.split(separator: "\n") == ["42", "700", "700", "0"], "\(r.stdout)")
    }

    @Test("FROM debian:bookworm: apt-get update && apt-get install hello", .timeLimit(.minutes(10)))
    func aptGetInstall() throws {
        try buildHello("apt-get")
    }

    // With apt's drop to _apt off, what remains is dpkg's chowns, which must be no-ops here.
    @Test("no subordinate range: apt with its sandbox off installs hello (dpkg's chowns are no-ops)",
          .enabled(if: !Env.hasRange), .timeLimit(.minutes(10)))
    func aptGetInstallWithoutSandboxUser() throws {
        try buildHello("apt-get -o APT::Sandbox::User=root")
    }

    /// glibc's resolver (which reads resolv.conf's options and search domains, unlike busybox's)
    /// finds Debian's archive and PyPI through each helper's DNS forwarder.
    @Test("the default network's /etc/resolv.conf works for glibc", arguments: ["slirp4netns", "pasta"])
    func resolverThroughEachHelper(helper: String) throws {
        guard let (fs, state, context) = try debianContext("""
        FROM debian:bookworm
        RUN getent hosts deb.debian.org && getent ahosts pypi.org | head -n 1 && cat /etc/resolv.conf

        """) else { return }
        let r = try rbuild(["build", "--root", state, "--progress", "plain", context], environment: helperEnvironment(helper))
        #expect(r.status == 0, "\(r.stderr.split(separator: "\n").suffix(30).joined(separator: "\n"))")
        #expect(r.stderr.contains("deb.debian.org") && r.stderr.contains("# rbuild: DNS through \(helper)"), "\(r.stderr)")
    }

    /// What `docker init`'s templates and most CI Dockerfiles do: apt's caches in cache mounts
    /// (locked, as apt needs), then OpenSSH's own client listing the keys of the user's agent
    /// (`--ssh default`) and of an agent rbuild starts for a key file (`--ssh ID=KEYFILE`). The
    /// second build finds the packages in the cache mount and downloads none.
    @Test("apt caches in cache mounts; ssh-add -l through --ssh default and --ssh ID=KEYFILE", .timeLimit(.minutes(10)))
    func aptCacheMountsAndSSH() throws {
        let fs = try Rootfs()
        guard let state = try importedDebian(fs) else { return }
        let key = fs.dir + "/id_ed25519", sock = fs.dir + "/agent.sock", tmp = fs.dir + "/tmp"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let keygen = try runProcess("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "rbuild-test-key", "-f", key])
        #expect(keygen.status == 0, "\(keygen.stderr)")
        // The user's agent, in the foreground (a daemonised one would keep the pipes this test
        // reads open, and the test waiting).
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-agent")
        agent.arguments = ["-D", "-a", sock]
        agent.standardInput = FileHandle.nullDevice
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        // SIGKILL: a child of Foundation's Process inherits the test thread's blocked signals, TERM included.
        defer { kill(agent.processIdentifier, SIGKILL); agent.waitUntilExit() }
        var st = stat()
        try #require(waitFor(seconds: 30) { stat(sock, &st) == 0 }, "ssh-agent's socket did not appear")
        var env = ProcessInfo.processInfo.environment
        env["SSH_AUTH_SOCK"] = sock
        env["TMPDIR"] = tmp
        let add = try runProcess("/usr/bin/ssh-add", ["-q", key], environment: env)
        #expect(add.status == 0, "\(add.stderr)")

        let context = fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        func build(_ marker: String) throws -> Result {
            try """
            FROM debian:bookworm
            RUN rm -f /etc/apt/apt.conf.d/docker-clean; echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache
            RUN --mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt,sharing=locked \\
                echo \(marker) && apt-get update -q && apt-get install -y -q --no-install-recommends openssh-client
            RUN --mount=type=ssh echo "\(marker) default:" $(ssh-add -l)
            RUN --mount=type=ssh,id=deploy echo "\(marker) deploy:" $(ssh-add -l)

            """.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
            return try rbuild(["build", "--root", state, "--progress", "plain", "--ssh", "default", "--ssh", "deploy=\(key)", context],
                              environment: env)
        }
        let fingerprint = try runProcess("/usr/bin/ssh-keygen", ["-l", "-f", key]).stdout.split(separator: " ")[1]
        let first = try build("first")
        #expect(first.status == 0, "\(first.stderr.split(separator: "\n").suffix(40).joined(separator: "\n"))")
        #expect(first.stderr.contains("Get:") && first.stderr.contains("openssh-client"), "\(first.stderr.suffix(3000))")
        #expect(first.stderr.contains("first default: 256 \(fingerprint) rbuild-test-key (ED25519)"), "\(first.stderr.suffix(3000))")
        #expect(first.stderr.contains("first deploy: 256 \(fingerprint) rbuild-test-key (ED25519)"), "\(first.stderr.suffix(3000))")

        // Warm: the lists and the .debs come from the cache mounts, so nothing is downloaded.
        let second = try build("second")
        #expect(second.status == 0, "\(second.stderr.split(separator: "\n").suffix(40).joined(separator: "\n"))")
        #expect(second.stderr.contains("Need to get 0 B/"), "\(second.stderr.suffix(3000))")
        #expect(second.stderr.contains("second deploy: 256 \(fingerprint)"), "\(second.stderr.suffix(3000))")
        // The agent rbuild started for the key file is gone with its socket's directory.
        let left = try FileManager.default.contentsOfDirectory(atPath: tmp).filter { $0.hasPrefix("rbuild-ssh-") }
        #expect(left.isEmpty, "\(left)")
        // (It is signalled as the build ends; under load it may take a moment to exit.)
        var agents = ""
        let gone = waitFor(seconds: 10) {
            agents = (try? runProcess("/usr/bin/pgrep", ["-f", tmp + "/rbuild-ssh-"]).stdout) ?? "pgrep failed"
            return agents.isEmpty
        }
        #expect(gone, "an agent outlived the build: \(agents)")
    }

    /// `--sbom`: the SPDX document lists what dpkg installed, jq included after apt-get install jq.
    @Test("--sbom lists jq after apt-get install jq", .timeLimit(.minutes(10)))
    func sbomListsInstalledPackages() throws {
        guard let (fs, state, context) = try debianContext("""
        FROM debian:bookworm
        RUN apt-get update -q && apt-get install -y -q --no-install-recommends jq && jq --version

        """) else { return }
        let out = fs.dir + "/sbom.tar"
        let r = try rbuild(["build", "--root", state, "--progress", "plain", "--sbom", "true", "-t", "jq:1",
                            "-o", "type=oci,dest=\(out)", "-o", "type=image", context])
        #expect(r.status == 0, "\(r.stderr.split(separator: "\n").suffix(40).joined(separator: "\n"))")
        let shown = try rbuild(["inspect", "--root", state, "--attestations", "jq:1"])
        let doc = try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: [String: Any]]
        let sbom = doc?["linux/amd64"]?["https://spdx.dev/Document"] as? [String: Any]
        let packages = sbom?["packages"] as? [[String: Any]] ?? []
        let jq = packages.first { $0["name"] as? String == "jq" }
        #expect(jq != nil, "\(shown.stdout.prefix(3000)) \(shown.stderr)")
        let purl = ((jq?["externalRefs"] as? [[String: Any]])?.first?["referenceLocator"] as? String) ?? ""
        #expect(purl.hasPrefix("pkg:deb/debian/jq@") && purl.hasSuffix("?arch=amd64"), "\(purl)")
        #expect(packages.contains { $0["name"] as? String == "libc6" } && packages.count > 80, "\(packages.count) packages")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + out])
        #expect(raw.stdout.contains("attestation-manifest"), "\(raw.stdout)")
    }

    func buildHello(_ apt: String) throws {
        guard let (fs, state, context) = try debianContext("""
        FROM debian:bookworm
        RUN getent hosts deb.debian.org && \(apt) update && \(apt) install -y --no-install-recommends hello && hello

        """) else { return }
        let r = try rbuild(["build", "--root", state, "--progress", "plain", "-t", "hello:1", context])
        #expect(r.status == 0, "\(r.stderr.split(separator: "\n").suffix(40).joined(separator: "\n"))")
        #expect(r.stderr.contains("Hello, world!") || r.stdout.contains("Hello, world!"), "\(r.stderr.suffix(2000))")
        if r.status == 0 {
            let run = try rbuild(["run", "--root", state, "hello:1", "--", "hello"])
            #expect(run.stdout.trimmed == "Hello, world!", "\(run.stderr)")
        }
    }
}
