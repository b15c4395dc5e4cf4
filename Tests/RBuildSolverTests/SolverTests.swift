import Foundation
import RBuildExporters
import RBuildOCI
import RBuildRuntime
import RBuildSystem
import RBuildSnapshots
import RBuildSolver
import Testing

func scratchDirectory() throws -> String {
    guard let d = makeTemporaryDirectory(prefix: NSTemporaryDirectory() + "/rbuild-solver-") else { throw POSIXError(.EIO) }
    return d
}

@Suite struct CacheKeyTests {
    @Test func fieldsDoNotRunTogether() {
        var a = CacheKey(parent: nil), b = CacheKey(parent: nil)
        a.add("x", "a"); a.add("y", "bc")
        b.add("x", "ab"); b.add("y", "c")
        #expect(a.digest != b.digest)
        var c = CacheKey(parent: nil)
        c.add("x", "a"); c.add("y", "bc")
        #expect(a.digest == c.digest)
        var d = CacheKey(parent: a.digest)
        d.add("x", "a"); d.add("y", "bc")
        #expect(d.digest != a.digest, "the parent is part of the key")
        var e = CacheKey(parent: nil), f = CacheKey(parent: nil)
        e.add("argv", ["sh", "-c x"])
        f.add("argv", ["sh -c", "x"])
        #expect(e.digest != f.digest)
    }
}

@Suite struct CacheIndexTests {
    @Test func stepsFilesAndConversions() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let index = try CacheIndex(path: dir + "/cache.db")
        let key = Digest.of(Array("k".utf8)), empty = Digest.of(Array("e".utf8))
        let layer = Descriptor(mediaType: MediaType.ociLayer, digest: Digest.of(Array("l".utf8)), size: 42)
        #expect(try index.lookup(key) == nil)
        try index.store(key, CachedResult(layer: layer, diffID: layer.digest))
        try index.store(empty, CachedResult(layer: nil, diffID: nil))
        #expect(try index.lookup(key) == CachedResult(layer: layer, diffID: layer.digest))
        #expect(try index.lookup(empty) == CachedResult(layer: nil, diffID: nil))
        let gz = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.of(Array("g".utf8)), size: 7)
        try index.rememberConversion(of: layer.digest, "gzip:-1", gz)
        #expect(try index.conversion(of: layer.digest, "gzip:-1") == gz)
        #expect(try index.conversion(of: layer.digest, "zstd:-1") == nil)
        #expect(Set(try index.layerDigests()) == [layer.digest, gz.digest])
        func id(_ ino: UInt64) -> CacheIndex.FileIdentity { CacheIndex.FileIdentity(dev: 1, ino: ino, size: 3, mtime: 4, ctime: 5) }
        try index.rememberFiles([("/ctx/a", id(2), layer.digest), ("/ctx/b/c", id(3), gz.digest), ("/ctx0/x", id(4), key)])
        let files = try index.fileDigests(under: "/ctx")
        #expect(files == [id(2): layer.digest, id(3): gz.digest], "only paths below the prefix")
        // A second connection (another process) sees the same data; clearing forgets steps.
        let other = try CacheIndex(path: dir + "/cache.db")
        #expect(try other.lookup(key) != nil)
        try other.clearSteps()
        #expect(try index.lookup(key) == nil)
    }

    @Test func concurrentWriters() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/cache.db"
        _ = try CacheIndex(path: path)
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            let index = try! CacheIndex(path: path)
            for j in 0..<50 {
                try! index.store(Digest.of(Array("\(i)-\(j)".utf8)), CachedResult(layer: nil, diffID: nil))
            }
        }
        let index = try CacheIndex(path: path)
        for i in 0..<4 { #expect(try index.lookup(Digest.of(Array("\(i)-49".utf8))) != nil) }
    }
}

@Suite struct InFlightTests {
    final class Log: @unchecked Sendable {
        let lock = NSLock()
        var events: [String] = []
        func add(_ e: String) { lock.lock(); events.append(e); lock.unlock() }
    }

    @Test func identicalWorkRunsOnce() throws {
        let inflight = InFlight<Int>()
        let log = Log()
        let key = Digest.of(Array("same".utf8))
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let v = try! inflight.run(key) { usleep(100_000); log.add("ran"); return 7 }
            #expect(v == 7)
        }
        #expect(log.events == ["ran"])
    }
}

@Suite struct ContextHasherTests {
    @Test func changesAreSeenAndUnchangedFilesNotReread() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ctx = dir + "/ctx"
        try FileManager.default.createDirectory(atPath: ctx + "/d", withIntermediateDirectories: true)
        try "one".write(toFile: ctx + "/d/a", atomically: false, encoding: .utf8)
        try "two".write(toFile: ctx + "/b", atomically: false, encoding: .utf8)
        usleep(250_000)   // older than the racy window
        let index = try CacheIndex(path: dir + "/cache.db")
        let first = ContextHasher(root: ctx, index: index)
        let d0 = try first.digest(of: "")
        #expect(first.filesRead == 2)
        first.save()
        let second = ContextHasher(root: ctx, index: index)
        #expect(try second.digest(of: "") == d0)
        #expect(second.filesRead == 0, "remembered by identity")
        #expect(try second.digest(of: "d/a") != d0)
        // Same size, new bytes: a new identity (mtime, ctime), so the file is read again.
        try "ONE".write(toFile: ctx + "/d/a", atomically: false, encoding: .utf8)
        let third = ContextHasher(root: ctx, index: index)
        let d3 = try third.digest(of: "")
        #expect(d3 != d0)
        #expect(third.filesRead == 1)
        // An mtime alone does not count (a fresh clone hits the cache); a mode change does; an
        // excluded file does not.
        var times = [timespec(tv_sec: 1000, tv_nsec: 0), timespec(tv_sec: 1000, tv_nsec: 0)]
        utimensat(AT_FDCWD, ctx + "/b", &times, 0)
        let touched = ContextHasher(root: ctx, index: index)
        #expect(try touched.digest(of: "") == d3)
        chmod(ctx + "/b", 0o600)
        let fourth = ContextHasher(root: ctx, index: index)
        let d4 = try fourth.digest(of: "")
        #expect(try fourth.digest(of: "", include: { $0 != "b" }) != d4)
    }

    /// The digest is sha256 over one line per entry in sorted depth-first order, whichever
    /// thread walks: checked against the lines written here for a tree of 3,000 directories
    /// with a file each (more than the walker keeps open at once), links and an empty directory;
    /// a subdirectory and an include filter too.
    @Test func digestIsTheDocumentedLinesOverAWideTree() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ctx = dir + "/ctx"
        for i in 0..<3000 {
            let d = ctx + "/w/" + String(format: "d%04d", i)
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try "file \(i)\n".write(toFile: d + "/f", atomically: false, encoding: .utf8)
        }
        try FileManager.default.createDirectory(atPath: ctx + "/empty", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: ctx + "/link", withDestinationPath: "w/d0001/f")
        try "top".write(toFile: ctx + "/a.txt", atomically: false, encoding: .utf8)

        func expected(_ under: String, include: (String) -> Bool = { _ in true }) throws -> Digest {
            var text = [UInt8]()
            func line(_ rel: String) throws {
                var st = stat()
                #expect(lstat(ctx + "/" + rel, &st) == 0)
                text += Array("\(rel)\u{0}\(st.st_mode)\u{0}".utf8)
                switch st.st_mode & S_IFMT {
                case S_IFREG:
                    let bytes = [UInt8](FileManager.default.contents(atPath: ctx + "/" + rel)!)
                    text += Array("\(st.st_size)\u{0}\(Digest.of(bytes).hex)".utf8)
                case S_IFLNK:
                    text += Array(try FileManager.default.destinationOfSymbolicLink(atPath: ctx + "/" + rel).utf8)
                default: break
                }
                text.append(0x0A)
                if st.st_mode & S_IFMT == S_IFDIR { try children(rel) }
            }
            func children(_ rel: String) throws {
                let names = try FileManager.default.contentsOfDirectory(atPath: rel.isEmpty ? ctx : ctx + "/" + rel)
                for n in names.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
                    let r = rel.isEmpty ? n : rel + "/" + n
                    if include(r) { try line(r) }
                }
            }
            if under.isEmpty { try children("") } else { try line(under) }
            return Digest.of(text)
        }
        usleep(250_000)
        let index = try CacheIndex(path: dir + "/cache.db")
        let cold = ContextHasher(root: ctx, index: index)
        #expect(try cold.digest(of: "") == expected(""))
        #expect(cold.filesRead == 3001)
        cold.save()
        let warm = ContextHasher(root: ctx, index: index)
        #expect(try warm.digest(of: "") == expected(""))
        #expect(try warm.digest(of: "w") == expected("w"))
        #expect(try warm.digest(of: "link") == expected("link"))
        let odd: (String) -> Bool = { !$0.hasSuffix("1") && !$0.hasSuffix("1/f") }
        #expect(try warm.digest(of: "", include: odd) == expected("", include: odd))
        #expect(warm.filesRead == 0)

        // An entry that cannot be read midway fails the digest with its path, and the walker
        // thread ends (the next digest works): a directory the walker cannot open, and a file
        // the hashing side cannot read while the walker waits on a full queue behind it.
        for (rel, mode) in [("w/d1500", mode_t(0o755)), ("w/d0100/f", 0o644)] {
            chmod(ctx + "/" + rel, 0)
            defer { chmod(ctx + "/" + rel, mode) }
            if getuid() != 0 {
                let e = #expect(throws: SolveError.self) { try ContextHasher(root: ctx, index: nil).digest(of: "") }
                #expect(e?.message.contains(rel) == true, "\(String(describing: e))")
            }
        }
        #expect(try warm.digest(of: "") == expected(""))
    }
}

@Suite struct OutputSpecTests {
    @Test func parsing() throws {
        #expect(try OutputSpec.parse("out") == OutputSpec(kind: .local, attributes: ["dest": "out"]))
        #expect(try OutputSpec.parse("-") == OutputSpec(kind: .tar, attributes: ["dest": "-"]))
        let oci = try OutputSpec.parse("type=oci,dest=a.tar,compression=zstd,compression-level=9")
        #expect(oci.kind == .oci && oci.destination == "a.tar")
        #expect(try oci.compression()! == (.zstd, 9))
        let named = try OutputSpec.parse(#"type=image,"name=a:1,b:2""#)
        #expect(named.names(tags: ["b:2", "c:3"]) == ["a:1", "b:2", "c:3"])
        #expect(throws: ExportError.self) { try OutputSpec.parse("dest=x") }
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=ftp,dest=x") }
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=oci,color=red") }
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=oci,compression=lz4").compression() }
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=oci,compression=gzip,compression-level=12").compression() }
    }
}

@Suite struct SnapshotViewTests {
    /// Two layers: the upper deletes /etc/gone by a `.wh.` file and /etc/x by an overlay 0/0-like
    /// xattr whiteout, and makes /opaque opaque.
    @Test func mergedLayers() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lower = dir + "/lower", upper = dir + "/upper"
        for d in [lower + "/etc", lower + "/opaque", upper + "/etc", upper + "/opaque"] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        for (p, c) in [(lower + "/etc/gone", "g"), (lower + "/etc/kept", "k"), (lower + "/etc/x", "x"), (lower + "/opaque/old", "o"),
                       (upper + "/etc/new", "n"), (upper + "/opaque/fresh", "f"), (upper + "/etc/.wh.gone", "")] {
            try c.write(toFile: p, atomically: false, encoding: .utf8)
        }
        try "".write(toFile: upper + "/etc/x", atomically: false, encoding: .utf8)
        for (file, name) in [(upper + "/etc/x", "user.overlay.whiteout"), (upper + "/opaque", "user.overlay.opaque")] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setfattr")
            p.arguments = ["-n", name, "-v", "y", file]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        try FileManager.default.createSymbolicLink(atPath: upper + "/escape", withDestinationPath: "../../../../etc")
        let view = SnapshotView(Snapshot(chainID: nil, directories: [lower, upper]))
        let etc = try #require(try view.directory(["etc"]))
        #expect(try view.entries(etc).map(\.name) == ["kept", "new"])
        let opaque = try #require(try view.directory(["opaque"]))
        #expect(try view.entries(opaque).map(\.name) == ["fresh"])
        #expect(try view.readFile("/etc/kept") == Array("k".utf8))
        #expect(try view.readFile("/etc/gone") == nil)
        // A symlink is resolved against the view's root: ../ never leaves it.
        #expect(try view.resolve("/escape/kept", followLast: true) == ["etc", "kept"])
        #expect(try view.readFile("/escape/kept") == Array("k".utf8))
        // `..` before a name starting with a combining mark is still `..` (a `/` and the mark
        // are one Character, and paths were split on Characters).
        try FileManager.default.createSymbolicLink(atPath: upper + "/mark", withDestinationPath: "../../\u{301}x")
        #expect(try view.resolve("/mark", followLast: true) == ["\u{301}x"])
        #expect(try view.resolve("/../\u{301}x", followLast: true) == ["\u{301}x"])
    }

    /// What the builder reads through a view (/etc/passwd for USER) is what the sandbox would
    /// see: a whiteout hides the file, a symlink in one layer reaches a file of another, and
    /// anything but a small regular file is refused by name.
    @Test func readsFilesAsTheSandboxSeesThem() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lower = dir + "/lower", upper = dir + "/upper"
        for d in [lower + "/etc", lower + "/db", upper + "/etc"] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        for name in ["passwd", "group", "shadow", "hosts"] {
            try "root:x:0:0::/root:/bin/sh\n".write(toFile: lower + "/etc/" + name, atomically: false, encoding: .utf8)
        }
        try "db\n".write(toFile: lower + "/db/passwd", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: upper + "/etc/passwd", withDestinationPath: "../db/passwd")
        #expect(mkfifo(upper + "/etc/group", 0o644) == 0)
        try FileManager.default.createDirectory(atPath: upper + "/etc/hosts", withIntermediateDirectories: false)
        let view = SnapshotView(Snapshot(chainID: nil, directories: [lower, upper]))
        #expect(try view.readFile("/etc/passwd") == Array("db\n".utf8))
        #expect(throws: ImageFileError(path: "/etc/group", problem: .fifo)) { try view.readFile("/etc/group") }
        #expect(throws: ImageFileError(path: "/etc/hosts", problem: .directory)) { try view.readFile("/etc/hosts") }
        #expect(throws: ImageFileError(path: "/etc/shadow", problem: .tooLarge(size: 26, limit: 10))) {
            try view.readFile("/etc/shadow", limit: 10)
        }
        // overlayfs's own whiteout, a 0/0 character device (unprivileged since Linux 5.8).
        if mknod(upper + "/etc/shadow", S_IFCHR | 0o644, 0) == 0 {
            #expect(try view.readFile("/etc/shadow") == nil)
        }
    }
}
