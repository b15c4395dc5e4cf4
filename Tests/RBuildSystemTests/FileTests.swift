import Foundation
import Testing
import RBuildSystem
#if canImport(Glibc)
import Glibc
#endif

func scratch() throws -> String {
    try makeTemporaryDirectory(in: NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory(),
                               prefix: "rbuild-system-")
}

struct SystemErrorTests {
    @Test func namesTheCallThePathAndTheErrno() {
        let e = SystemError("openat", path: "/state/tmp/x", errno: ENOENT)
        #expect(e.description == "openat /state/tmp/x: No such file or directory")
        #expect(SystemError("pipe", errno: EMFILE).description == "pipe: Too many open files")
    }

    @Test func capturesErrnoAtConstruction() {
        #expect(open("/nonexistent/rbuild", O_RDONLY) == -1)
        #expect(SystemError("open").errno == ENOENT)
    }
}

struct FileDescriptorTests {
    @Test func writesAndReadsWholeFiles() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try writeNewFile(dir + "/f", bytes, mode: 0o600)
        #expect(try FileDescriptor(path: dir + "/f", flags: O_RDONLY).readAll() == bytes)
        #expect(try FileDescriptor(path: dir + "/f", flags: O_RDONLY).readAll(limit: 65536).count == 65536)
        #expect(throws: SystemError.self) { try writeNewFile(dir + "/f", [1]) }   // exists: O_EXCL
        #expect(try FileDescriptor(path: dir + "/f", flags: O_RDONLY).readAll() == bytes, "a refused write leaves the file alone")
    }

    @Test func openFailuresSayWhichPath() {
        #expect {
            try FileDescriptor(path: "/nonexistent/rbuild", flags: O_RDONLY)
        } throws: { ($0 as? SystemError) == SystemError("open", path: "/nonexistent/rbuild", errno: ENOENT) }
    }

    @Test func closesOnce() throws {
        let fd = try FileDescriptor(path: "/dev/null", flags: O_RDONLY)
        let raw = fd.rawValue
        fd.close()
        #expect(fd.rawValue == -1)
        #expect(fcntl(raw, F_GETFD) == -1)
        fd.close()
    }
}

struct DirectoryWalkTests {
    @Test func removesTreesWithoutFollowingSymlinksOrStoppingAtModes() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        let outside = try scratch()
        defer { try? removeTree(atPath: outside) }
        try writeNewFile(outside + "/keep", [1])
        mkdir(dir + "/t", 0o755)
        mkdir(dir + "/t/locked", 0o755)
        try writeNewFile(dir + "/t/locked/f", [2])
        chmod(dir + "/t/locked", 0)
        symlink(outside, dir + "/t/link")
        try removeTree(atPath: dir + "/t")
        #expect(!pathExists(dir + "/t"))
        #expect(pathExists(outside + "/keep"), "the symlink was removed, not followed")
        try removeTree(atPath: dir + "/t")   // gone already: not an error
    }

    @Test func listsNamesInByteOrder() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        for n in ["b", "a", "B", "é", ".hidden"] { try writeNewFile(dir + "/" + n, []) }
        let fd = try FileDescriptor(path: dir, flags: O_RDONLY | O_DIRECTORY)
        #expect(try sortedNames(fd.rawValue) == [".hidden", "B", "a", "b", "é"])
        #expect(throws: SystemError.self) { try sortedNames(-1) }
    }

    @Test func readsInsideARootOnly() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        mkdir(dir + "/etc", 0o755)
        try writeNewFile(dir + "/etc/passwd", Array("root:x:0:0::/root:/bin/sh\n".utf8))
        symlink("/etc/passwd", dir + "/abs")
        symlink("../../../../etc/passwd", dir + "/up")
        let inside = Array("root:x:0:0::/root:/bin/sh\n".utf8)
        #expect(try readFileInRoot(root: dir, path: "/abs") == inside, "an absolute link resolves inside the root")
        #expect(try readFileInRoot(root: dir, path: "up") == inside, ".. stops at the root")
        #expect(try readFileInRoot(root: dir, path: "/missing") == nil)
    }
}

struct StateLayoutTests {
    @Test func namesEveryPathUnderTheRoot() {
        let l = StateLayout(root: "/s")
        #expect(l.sha256Blobs == "/s/blobs/sha256")
        #expect(l.ingest == "/s/ingest")
        #expect(l.images == "/s/images.json")
        #expect(l.imagesLock == "/s/images.lock")
        #expect(l.cacheIndex == "/s/cache.db")
        #expect(l.snapshots(kind: "overlay") == "/s/snapshots/overlay")
        #expect(l.tmp == "/s/tmp")
        #expect(l.run == "/s/run")
    }
}
