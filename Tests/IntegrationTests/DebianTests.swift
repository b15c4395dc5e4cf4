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
        let fs = try Rootfs()
        guard let state = try importedDebian(fs) else { return }
        let context = fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try """
        FROM debian:bookworm
        RUN getent hosts deb.debian.org && getent ahosts pypi.org | head -n 1 && cat /etc/resolv.conf

        """.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
        let r = try rbuild(["build", "--root", state, "--progress", "plain", context], environment: helperEnvironment(helper))
        #expect(r.status == 0, "\(r.stderr.split(separator: "\n").suffix(30).joined(separator: "\n"))")
        #expect(r.stderr.contains("deb.debian.org") && r.stderr.contains("# rbuild: DNS through \(helper)"), "\(r.stderr)")
    }

    func buildHello(_ apt: String) throws {
        let fs = try Rootfs()
        guard let state = try importedDebian(fs) else { return }
        let context = fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: context, withIntermediateDirectories: true)
        try """
        FROM debian:bookworm
        RUN getent hosts deb.debian.org && \(apt) update && \(apt) install -y --no-install-recommends hello && hello

        """.write(toFile: context + "/Dockerfile", atomically: false, encoding: .utf8)
        let r = try rbuild(["build", "--root", state, "--progress", "plain", "-t", "hello:1", context])
        #expect(r.status == 0, "\(r.stderr.split(separator: "\n").suffix(40).joined(separator: "\n"))")
        #expect(r.stderr.contains("Hello, world!") || r.stdout.contains("Hello, world!"), "\(r.stderr.suffix(2000))")
        if r.status == 0 {
            let run = try rbuild(["run", "--root", state, "hello:1", "--", "hello"])
            #expect(run.stdout.trimmed == "Hello, world!", "\(run.stderr)")
        }
    }
}
