import Foundation
import CArchive
import RBuildOCI
import RBuildSnapshots
import Testing

final class Scratch: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "rbuild-snap-XXXXXX").utf8CString)
        path = t.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Makes a tar with Python's tarfile: entries are (name, kind, data-or-target).
func makeTar(_ path: String, _ entries: [(String, String, String)]) throws {
    let json = String(decoding: try JSONSerialization.data(withJSONObject: entries.map { [$0.0, $0.1, $0.2] }), as: UTF8.self)
    let script = """
    import io, json, sys, tarfile
    with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in json.loads(sys.argv[2]):
            i = tarfile.TarInfo(name)
            if kind == "dir": i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
            elif kind == "sym": i.type = tarfile.SYMTYPE; i.linkname = data; t.addfile(i)
            elif kind == "hard": i.type = tarfile.LNKTYPE; i.linkname = data; t.addfile(i)
            elif kind == "fifo": i.type = tarfile.FIFOTYPE; i.mode = 0o644; t.addfile(i)
            else:
                b = data.encode(); i.size = len(b); i.mode = 0o644; t.addfile(i, io.BytesIO(b))
    """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", script, path, json]
    try p.run()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0)
}

func xattr(_ path: String, _ name: String) -> String? {
    var buf = [CChar](repeating: 0, count: 16)
    let n = getxattr(path, name, &buf, 15)
    return n < 0 ? nil : String(cString: buf)
}

struct UnpackTests {
    @Test func filesDirectoriesLinksAndWhiteouts() throws {
        let s = Scratch()
        try makeTar(s.path + "/l.tar", [
            ("etc", "dir", ""), ("etc/hostname", "file", "box\n"), ("etc/link", "sym", "hostname"),
            ("etc/hard", "hard", "etc/hostname"), ("bin/.wh.vi", "file", ""), ("var/.wh..wh..opq", "file", ""),
            ("./deep/er/file", "file", "x"),
        ])
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try unpackLayer(StoredBlob(path: s.path + "/l.tar"), into: dir, layerName: "test")
        #expect(try String(contentsOfFile: dir + "/etc/hostname", encoding: .utf8) == "box\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/etc/link") == "hostname")
        var a = stat(), b = stat()
        stat(dir + "/etc/hostname", &a)
        stat(dir + "/etc/hard", &b)
        #expect(a.st_ino == b.st_ino, "a hard link")
        #expect(FileManager.default.fileExists(atPath: dir + "/deep/er/file"))
        // Whiteouts: overlayfs's xattr forms.
        #expect(xattr(dir + "/bin/vi", "user.overlay.whiteout") == "")
        #expect(xattr(dir + "/bin", "user.overlay.opaque") == "x")
        #expect(xattr(dir + "/var", "user.overlay.opaque") == "y")
        #expect(FileManager.default.fileExists(atPath: dir + "/bin/vi"))
    }

    @Test("hostile layers are refused, and nothing is written or deleted outside the directory", arguments: [
        [("../escape", "file", "x")],
        [("a/../../escape", "file", "x")],
        [("link", "sym", "../.."), ("link/escape", "file", "x")],
        [("abs", "sym", "/"), ("abs/escape", "file", "x")],
        [("h", "hard", "../escape")],
        [("up", "sym", "../.."), ("up/.wh.victim", "file", "")],
        [("up", "sym", "../.."), ("up/.wh..wh..opq", "file", "")],
        // A `/` and a combining mark after it are one Character: names split on Characters hid
        // a `..` and sent a directory through a symlink (mkdirat of two names at once).
        [("../\u{301}escape", "file", "x")],
        [("link", "sym", "../.."), ("link/\u{301}escape/f", "file", "x")],
        [("abs", "sym", "/"), ("abs/\u{301}escape/f", "file", "x")],
    ], [WhiteoutStyle.overlayXattr, .ociFiles, .apply])
    func hostileLayers(_ entries: [(String, String, String)], style: WhiteoutStyle) throws {
        let s = Scratch()
        try makeTar(s.path + "/evil.tar", entries)
        let dir = s.path + "/a/b/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for victim in [s.path + "/victim", s.path + "/a/victim"] {
            try "keep".write(toFile: victim, atomically: false, encoding: .utf8)
        }
        do {
            try unpackLayer(StoredBlob(path: s.path + "/evil.tar"), into: dir, layerName: "evil", whiteouts: style)
        } catch let e as SnapshotError {
            #expect(e.message.hasPrefix("layer evil: entry \""), "\(e.message)")
        }
        for outside in [s.path + "/escape", s.path + "/a/escape", s.path + "/a/b/escape", "/escape"] {
            #expect(!FileManager.default.fileExists(atPath: outside), "\(outside) was written")
        }
        for victim in [s.path + "/victim", s.path + "/a/victim"] {
            #expect(FileManager.default.fileExists(atPath: victim), "\(victim) was deleted")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path + "/a/b") == ["fs"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path + "/a").sorted() == ["b", "victim"])
        #expect(!FileManager.default.fileExists(atPath: "/\u{301}escape"))
        #expect(xattr(s.path + "/a", "user.overlay.opaque") == nil && xattr(s.path, "user.overlay.opaque") == nil)
    }

    @Test func applyStyleDeletesAndEmptiesOpaqueDirectories() throws {
        let s = Scratch()
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try makeTar(s.path + "/l1.tar", [("etc/a", "file", "1"), ("etc/b", "file", "2"), ("var/x/y", "file", "3"), ("gone", "file", "4")])
        try makeTar(s.path + "/l2.tar", [("etc/new", "file", "5"), ("etc/.wh..wh..opq", "file", ""), ("var/.wh.x", "file", ""),
                                         (".wh.gone", "file", ""), ("gone2", "file", "6")])
        try unpackLayer(StoredBlob(path: s.path + "/l1.tar"), into: dir, layerName: "l1", whiteouts: .apply)
        try unpackLayer(StoredBlob(path: s.path + "/l2.tar"), into: dir, layerName: "l2", whiteouts: .apply)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/etc") == ["new"], "this layer's entry stays")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/var").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["etc", "gone2", "var"])
    }

    /// Modes are given at creation where the umask allows; set-id bits never can be.
    @Test func modesIncludingSetIDBitsSurvive() throws {
        let s = Scratch()
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let script = """
        import io, sys, tarfile
        with tarfile.open(sys.argv[1], "w") as t:
            for name, mode in [("suid", 0o4755), ("sgid", 0o2711), ("plain", 0o644), ("ro", 0o444), ("group-w", 0o664)]:
                i = tarfile.TarInfo(name); i.size = 1; i.mode = mode; t.addfile(i, io.BytesIO(b"x"))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", script, s.path + "/m.tar"]
        try p.run()
        p.waitUntilExit()
        try unpackLayer(StoredBlob(path: s.path + "/m.tar"), into: dir, layerName: "modes", whiteouts: .apply)
        for (name, mode) in [("suid", 0o4755), ("sgid", 0o2711), ("plain", 0o644), ("ro", 0o444), ("group-w", 0o664)] {
            var st = stat()
            stat(dir + "/" + name, &st)
            #expect(Int(st.st_mode & 0o7777) == mode, "\(name)")
        }
    }

    /// A whiteout replaces what its own layer put under that name, as moby's unpack does. Unpack
    /// used to open that entry to mark it, which blocks for ever on a FIFO (found while writing
    /// scripts/fuzz/tar): if it blocks again, opening the FIFO for reading ends the test.
    @Test(arguments: [WhiteoutStyle.overlayXattr, .ociFiles, .apply])
    func whiteoutOfAnEntryOfTheSameLayer(style: WhiteoutStyle) throws {
        let s = Scratch()
        try makeTar(s.path + "/l.tar", [("p", "fifo", ""), (".wh.p", "file", ""), ("d/f", "file", "x"), (".wh.d", "file", "")])
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let blob = StoredBlob(path: s.path + "/l.tar")
        let outcome = Outcome()
        Thread {
            do { try unpackLayer(blob, into: dir, layerName: "l", whiteouts: style) } catch { outcome.error = error }
            outcome.done.signal()
        }.start()
        if outcome.done.wait(timeout: .now() + 10) == .timedOut {
            close(open(dir + "/p", O_RDONLY | O_NONBLOCK))
            outcome.done.wait()
            Issue.record("unpack blocked on the FIFO")
        }
        if let e = outcome.error { Issue.record("unpack failed: \(e)") }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        switch style {
        case .overlayXattr:
            #expect(names == ["d", "p"])
            for whiteout in ["d", "p"] {
                var st = stat()
                lstat(dir + "/" + whiteout, &st)
                #expect(st.st_mode & S_IFMT == S_IFREG && st.st_size == 0 && xattr(dir + "/" + whiteout, "user.overlay.whiteout") == "")
            }
        case .apply:
            #expect(names.isEmpty)
        case .ociFiles:
            #expect(names == [".wh.d", ".wh.p", "d", "p"])
        }
    }

    final class Outcome: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var error: Error?
    }

    @Test func ociFilesStyleKeepsWhiteoutFiles() throws {
        let s = Scratch()
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try makeTar(s.path + "/l.tar", [("etc/.wh..wh..opq", "file", ""), ("bin/.wh.vi", "file", "")])
        try unpackLayer(StoredBlob(path: s.path + "/l.tar"), into: dir, layerName: "l", whiteouts: .ociFiles)
        #expect(FileManager.default.fileExists(atPath: dir + "/etc/.wh..wh..opq"))
        #expect(FileManager.default.fileExists(atPath: dir + "/bin/.wh.vi"))
    }
}

/// Issue 16: an image's layer unpacks to the diff_id its config gives, within the size limit.
struct CheckedUnpackTests {
    func sha256(_ path: String) throws -> Digest {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return try Digest(parsing: "sha256:" + text.prefix(64))
    }

    func layer(_ s: Scratch) throws -> (StoredBlob, Digest, String) {
        try makeTar(s.path + "/l.tar", [("etc", "dir", ""), ("etc/hostname", "file", String(repeating: "box\n", count: 4096))])
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (StoredBlob(path: s.path + "/l.tar"), try sha256(s.path + "/l.tar"), dir)
    }

    @Test func theRightDiffIDUnpacks() throws {
        let s = Scratch()
        let (blob, diffID, dir) = try layer(s)
        try unpackLayer(blob, into: dir, layerName: "sha256:x", check: LayerCheck(diffID: diffID))
        #expect(try String(contentsOfFile: dir + "/etc/hostname", encoding: .utf8).count == 4 * 4096)
    }

    @Test func anotherDiffIDIsRefused() throws {
        let s = Scratch()
        let (blob, diffID, dir) = try layer(s)
        let claimed = Digest.of([1])
        #expect {
            try unpackLayer(blob, into: dir, layerName: "sha256:x", check: LayerCheck(diffID: claimed))
        } throws: { e in
            (e as? OCIError)?.message == "layer sha256:x unpacks to \(diffID), not to \(claimed), the diff_id its image's config gives: refused"
        }
    }

    @Test func aLayerOverTheLimitIsRefused() throws {
        let s = Scratch()
        let (blob, diffID, dir) = try layer(s)
        #expect {
            try unpackLayer(blob, into: dir, layerName: "sha256:x", check: LayerCheck(diffID: diffID, maxSize: 8192))
        } throws: { e in
            (e as? OCIError)?.message == "layer sha256:x unpacks to more than 8 KiB, the limit (--max-layer-size, RBUILD_MAX_LAYER_SIZE): refused"
        }
    }

    @Test func aSparseEntryCountsWhatItWrites() throws {
        // GNU tar stores a 64 MiB sparse file in a few KiB; unpacked, it is 64 MiB of file.
        let s = Scratch()
        let src = s.path + "/src"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        let fd = open(src + "/holes", O_WRONLY | O_CREAT, 0o644)
        ftruncate(fd, 64 << 20)
        pwrite(fd, "x", 1, 32 << 20)
        close(fd)
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
        tar.arguments = ["--sparse", "-C", src, "-cf", s.path + "/sparse.tar", "holes"]
        try tar.run()
        tar.waitUntilExit()
        var st = stat()
        stat(s.path + "/sparse.tar", &st)
        #expect(st.st_size < 1 << 20)
        let dir = s.path + "/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect {
            try unpackLayer(StoredBlob(path: s.path + "/sparse.tar"), into: dir, layerName: "sha256:s",
                            check: LayerCheck(diffID: try sha256(s.path + "/sparse.tar"), maxSize: 8 << 20))
        } throws: { e in
            (e as? OCIError)?.message == "layer sha256:s writes more than 8 MiB into its files, the limit (--max-layer-size, RBUILD_MAX_LAYER_SIZE): refused"
        }
    }
}
