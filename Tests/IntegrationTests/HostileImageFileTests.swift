import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 16, special files where the builder reads the image: the /etc/passwd and /etc/group
/// that USER, `COPY --chown`, WORKDIR and cache-mount owners are looked up in belong to the
/// image, which an earlier step may have made a FIFO, a directory, a huge file or a symlink out
/// of the root. The build fails at once, naming the file and what it is; a symlink resolves
/// inside the root, across layers, as the sandbox sees it.
@Suite("Special files where rbuild reads the image, as an unprivileged user", .enabled(if: Env.enabled))
struct HostileImageFileTests {
    /// Long enough for any of these builds; a reader that blocks is killed here.
    static let timeout = 120.0

    /// The steps that look a name up, each after the image's files were planted.
    static let lookups = [
        "USER app\nRUN true",
        "COPY --chown=app:app f /f",
        "USER app\nWORKDIR /made",
        "USER app\nRUN --mount=type=cache,target=/c true",
    ]

    /// Builds `plant` then each lookup; every build must fail quickly with `message`.
    func expectRefused(_ plant: String, _ message: String, snapshotter: String? = nil) throws {
        let b = try BuildFixture()
        for (i, lookup) in Self.lookups.enumerated() {
            let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\n\(plant)\n\(lookup)\n"], name: "ctx\(i)")
            let clock = ContinuousClock()
            let started = clock.now
            let r = try b.build(snapshotter.map { ["--snapshotter", $0] } ?? [], ctx, timeout: Self.timeout)
            let took = clock.now - started
            #expect(r.status == 1, "\(lookup): \(r.stderr)")
            #expect(r.stderr.contains(message), "\(lookup): \(r.stderr)")
            #expect(r.stderr.contains(">>> " + lookup.split(separator: "\n").last!), "the step is named: \(r.stderr)")
            #expect(took < .seconds(Self.timeout / 2), "\(lookup) took \(took)")
        }
    }

    /// On every snapshotter: the layers a view merges, and the copy snapshotter's one directory.
    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func fifoPasswd(snapshotter: String) throws {
        try expectRefused("RUN rm /etc/passwd && mkfifo /etc/passwd",
                          "the image's /etc/passwd is a FIFO (named pipe), not a regular file", snapshotter: snapshotter)
    }

    @Test func fifoGroup() throws {
        try expectRefused("RUN rm /etc/group && mkfifo /etc/group",
                          "the image's /etc/group is a FIFO (named pipe), not a regular file")
    }

    @Test func directoryGroup() throws {
        try expectRefused("RUN rm /etc/group && mkdir /etc/group", "the image's /etc/group is a directory, not a regular file")
    }

    /// Just over the limit (a 10 GiB sparse file is refused the same way, see ImageFileTests in
    /// RBuildSystemTests; here its layer would take minutes to pack).
    @Test func hugeGroup() throws {
        try expectRefused("RUN truncate -s 17M /etc/group",
                          "the image's /etc/group is 17825792 bytes, more than the 16 MiB rbuild reads of it")
    }

    /// Symlinks to a host file, absolute and climbing with `..`: resolved inside the image, where
    /// nothing is at that path, so the names the host file holds are not found.
    @Test func symlinksOutOfTheRootStayInside() throws {
        let b = try BuildFixture()
        let host = b.fs.dir + "/host"
        try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
        try "intruder:x:0:0::/intruder:/bin/sh\n".write(toFile: host + "/passwd", atomically: false, encoding: .utf8)
        try "intruders:x:0:\n".write(toFile: host + "/group", atomically: false, encoding: .utf8)
        let plant = "RUN ln -sf \(host)/passwd /etc/passwd && ln -sf \(String(repeating: "../", count: 16))\(host.dropFirst())/group /etc/group"
        for (i, (lookup, message)) in [
            ("USER intruder\nRUN true", "unable to find user intruder"),
            ("USER 0:intruders\nRUN true", "unable to find group intruders"),
            ("COPY --chown=intruder f /f", "--chown=intruder: no user named intruder"),
            ("USER intruder\nRUN --mount=type=cache,target=/c true", "unable to find user intruder"),
        ].enumerated() {
            let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\n\(plant)\n\(lookup)\n"], name: "ctx\(i)")
            let r = try b.build([], ctx, timeout: Self.timeout)
            #expect(r.status == 1, "\(lookup): \(r.stderr)")
            #expect(r.stderr.contains(message), "\(lookup): \(r.stderr)")
        }
    }

    /// /etc/passwd and /etc/group as symlinks (absolute, relative) to files an earlier layer
    /// made, then /etc/group deleted (a whiteout in the next layer: no group file, not a device):
    /// every lookup sees them as the sandbox does, on every snapshotter.
    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func symlinksAcrossLayersAndDeletions(snapshotter: String) throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": """
            FROM busybox
            RUN mkdir /db && cp /etc/passwd /etc/group /db/ \\
                && echo 'someone:x:0:0::/home/someone:/bin/sh' >> /db/passwd && echo 'grp:x:0:' >> /db/group
            RUN ln -sf /db/passwd /etc/passwd && ln -sf ../db/group /etc/group
            COPY --chown=someone:grp f /f
            USER someone:grp
            WORKDIR /made
            RUN --mount=type=cache,target=/c test "$HOME" = /home/someone && touch /c/ok
            USER root
            RUN rm /etc/group /db/group
            USER someone
            RUN test "$HOME" = /home/someone
            """])
        let r = try b.build(["--snapshotter", snapshotter], ctx, timeout: Self.timeout)
        #expect(r.status == 0, "\(r.stderr)")
    }
}
