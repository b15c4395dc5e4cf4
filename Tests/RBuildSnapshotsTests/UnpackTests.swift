import Foundation
import CArchive
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
        try unpackLayer(s.path + "/l.tar", into: dir, layerName: "test")
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

    @Test("hostile layers are refused, and nothing is written outside the directory", arguments: [
        [("../escape", "file", "x")],
        [("a/../../escape", "file", "x")],
        [("link", "sym", "../.."), ("link/escape", "file", "x")],
        [("abs", "sym", "/"), ("abs/escape", "file", "x")],
        [("h", "hard", "../escape")],
    ])
    func hostileLayers(_ entries: [(String, String, String)]) throws {
        let s = Scratch()
        try makeTar(s.path + "/evil.tar", entries)
        let dir = s.path + "/a/b/fs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do {
            try unpackLayer(s.path + "/evil.tar", into: dir, layerName: "evil")
        } catch let e as SnapshotError {
            #expect(e.message.hasPrefix("layer evil: entry \""), "\(e.message)")
        }
        for outside in [s.path + "/escape", s.path + "/a/escape", s.path + "/a/b/escape", "/escape"] {
            #expect(!FileManager.default.fileExists(atPath: outside), "\(outside) was written")
        }
    }

    @Test func snapshotsAreSharedAndComplete() throws {
        let s = Scratch()
        try makeTar(s.path + "/l.tar", [("f", "file", "1")])
        let store = try SnapshotStore(stateDirectory: s.path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.root).isEmpty)
    }
}
