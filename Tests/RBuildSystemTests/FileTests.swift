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

/// The files the builder reads from an image for itself: only a small regular file inside the
/// root is read; anything else is refused at once, by name.
struct ImageFileTests {
    /// `body` on a thread of its own, given `seconds` to finish: a reader that blocks (an open of
    /// a FIFO) fails the test instead of hanging it, and `unblock` then lets the thread go.
    func withinSeconds(_ seconds: Int, _ body: @escaping @Sendable () throws -> [UInt8]?,
                       unblock: () -> Void) -> Swift.Result<[UInt8]?, any Error>? {
        final class Box: @unchecked Sendable { var result: Swift.Result<[UInt8]?, any Error>? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            box.result = Swift.Result { try body() }
            done.signal()
        }
        if done.wait(timeout: .now() + .seconds(seconds)) == .timedOut {
            unblock()
            done.wait()
            return nil
        }
        return box.result
    }

    func refusal(_ body: () throws -> [UInt8]?) -> ImageFileError? {
        do {
            let bytes = try body()
            Issue.record("read \(bytes.map { "\($0.count) bytes" } ?? "nothing") instead of refusing")
        } catch let e as ImageFileError {
            return e
        } catch {
            Issue.record("unexpected \(error)")
        }
        return nil
    }

    @Test func readsARegularFileAsItIs() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        mkdir(dir + "/etc", 0o755)
        let bytes = Array("root:x:0:0::/root:/bin/sh\n".utf8)
        try writeNewFile(dir + "/etc/passwd", bytes)
        try writeNewFile(dir + "/etc/empty", [])
        #expect(try readFileInRoot(root: dir, path: "/etc/passwd") == bytes)
        #expect(try readFileInRoot(root: dir, path: "/etc/empty") == [])
        #expect(try readFileInRoot(root: dir, path: "/etc/passwd", limit: bytes.count) == bytes, "the limit itself is allowed")
        #expect(try readFileInRoot(root: dir, path: "/etc/group") == nil)
        #expect(try readFileInRoot(root: dir, path: "/etc/passwd/x") == nil, "ENOTDIR is missing too")
        #expect(throws: SystemError.self) { try readFileInRoot(root: dir + "/none", path: "/etc/passwd") }
    }

    @Test func refusesAFIFOWithoutBlocking() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        mkdir(dir + "/etc", 0o755)
        #expect(mkfifo(dir + "/etc/passwd", 0o644) == 0)
        let outcome = withinSeconds(10, { try readFileInRoot(root: dir, path: "/etc/passwd") }, unblock: {
            // A writer lets a reader blocked in open(2) go.
            let w = open(dir + "/etc/passwd", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if w >= 0 { close(w) }
        })
        guard let outcome else {
            Issue.record("reading a FIFO blocked")
            return
        }
        #expect(refusal { try outcome.get() } == ImageFileError(path: "/etc/passwd", problem: .fifo))
    }

    @Test func refusesADeviceWithoutOpeningIt() throws {
        // The host's root, where /dev/null is a character device (a snapshot has none: no
        // CAP_MKNOD, but a base image unpacked by root could).
        let e = refusal { try readFileInRoot(root: "/", path: "/dev/null") }
        #expect(e == ImageFileError(path: "/dev/null", problem: .characterDevice))
        #expect(e?.description == "the image's /dev/null is a character device, not a regular file: rbuild reads only regular files there")
    }

    @Test func refusesDirectoriesSocketsAndUnfollowedSymlinks() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        mkdir(dir + "/etc", 0o755)
        mkdir(dir + "/etc/group", 0o755)
        #expect(refusal { try readFileInRoot(root: dir, path: "/etc/group") } == ImageFileError(path: "/etc/group", problem: .directory))

        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(sock) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array((dir + "/etc/passwd").utf8CString)
        #expect(path.count <= MemoryLayout.size(ofValue: addr.sun_path))
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path.map { UInt8(bitPattern: $0) }) }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        #expect(refusal { try readFileInRoot(root: dir, path: "/etc/passwd") } == ImageFileError(path: "/etc/passwd", problem: .socket))

        try writeNewFile(dir + "/etc/real", [1])
        symlink("real", dir + "/etc/link")
        let rootfd = try FileDescriptor(path: dir, flags: O_PATH_FLAG | O_DIRECTORY)
        #expect(try readFileInRoot(rootfd.rawValue, "etc/link") == [1])
        #expect(refusal { try readFileInRoot(rootfd.rawValue, "etc/link", followLast: false, name: "/etc/link") }
                    == ImageFileError(path: "/etc/link", problem: .symlink))
    }

    @Test func refusesALargeSparseFileWithoutReadingIt() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        mkdir(dir + "/etc", 0o755)
        let fd = try FileDescriptor(path: dir + "/etc/group", flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        #expect(ftruncate(fd.rawValue, 10 << 30) == 0)
        fd.close()
        let clock = ContinuousClock()
        let started = clock.now
        let e = refusal { try readFileInRoot(root: dir, path: "/etc/group") }
        #expect(clock.now - started < .seconds(1), "nothing was read")
        #expect(e == ImageFileError(path: "/etc/group", problem: .tooLarge(size: 10 << 30, limit: imageFileSizeLimit)))
        #expect(e?.description == "the image's /etc/group is 10737418240 bytes, more than the 16 MiB rbuild reads of it")

        try writeNewFile(dir + "/etc/passwd", [UInt8](repeating: 0x61, count: 101))
        #expect(refusal { try readFileInRoot(root: dir, path: "/etc/passwd", limit: 100) }
                    == ImageFileError(path: "/etc/passwd", problem: .tooLarge(size: 101, limit: 100)))
    }

    @Test func symlinksOutOfTheRootResolveInsideIt() throws {
        let dir = try scratch()
        defer { try? removeTree(atPath: dir) }
        let host = try scratch()
        defer { try? removeTree(atPath: host) }
        try writeNewFile(host + "/passwd", Array("host:x:0:0::/:/bin/sh\n".utf8))
        mkdir(dir + "/etc", 0o755)
        // An absolute link and a climbing one, to a host file that the root does not have.
        symlink(host + "/passwd", dir + "/etc/passwd")
        symlink(String(repeating: "../", count: 12) + host.dropFirst() + "/passwd", dir + "/etc/group")
        #expect(try readFileInRoot(root: dir, path: "/etc/passwd") == nil)
        #expect(try readFileInRoot(root: dir, path: "/etc/group") == nil)
        // Where the root has that path, its own file is what is read.
        try FileManager.default.createDirectory(atPath: dir + host, withIntermediateDirectories: true)
        try writeNewFile(dir + host + "/passwd", Array("inside:x:0:0::/:/bin/sh\n".utf8))
        #expect(try readFileInRoot(root: dir, path: "/etc/passwd") == Array("inside:x:0:0::/:/bin/sh\n".utf8))
        #expect(try readFileInRoot(root: dir, path: "/etc/group") == Array("inside:x:0:0::/:/bin/sh\n".utf8))
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

struct ByteSizeTests {
    @Test("sizes as docker reads them") func sizes() {
        #expect(parseByteSize("1024") == 1024)
        #expect(parseByteSize("1k") == 1024)
        #expect(parseByteSize("1.5GiB") == 3 << 29)
        #expect(parseByteSize("64GiB") == 64 << 30)
        #expect(parseByteSize("12x") == nil)
        #expect(parseByteSize("") == nil)
        // Past Int64: refused, not a trap converting the Double.
        #expect(parseByteSize("99999999999t") == nil)
    }
}
