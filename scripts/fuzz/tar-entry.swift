// libFuzzer entry point for the tar reader and layer unpack. The fuzzer's bytes are a layer blob
// (plain tar, gzip, zstd, bzip2 or xz): they are decompressed (LayerStream, through
// decompressLayer), read entry by entry as `rbuild load` and `rbuild import` read archives
// (TarReader, safeEntryName), and unpacked into a directory made for this input: as an image's
// layer in each whiteout style (through LayerStream, checked against the diff_id just computed and
// a size limit) and as an ADD archive (libarchive's own filters). Afterwards that directory must
// hold the blob, unchanged, the unpack roots and an empty `outside`, and the per-process work
// directory nothing else: a write through a `..` name, a symlink or a hard link planted by the
// layer shows up there. Any crash, hang, leak or write outside is a bug. Built by scripts/fuzz/tar.
import CArchive
import Foundation
import RBuildOCI
import RBuildSnapshots
import RBuildSystem

/// This process's work directory (one per fuzzing process: -jobs may run several), removed at
/// exit (left behind after a crash, with the input that crashed).
let work = makeWorkDirectory()

func makeWorkDirectory() -> String {
    let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
    guard let dir = makeTemporaryDirectory(prefix: tmp + "/rbuild-fuzz-tar.") else { fail("mkdtemp in \(tmp) failed") }
    atexit { try? removeTree(atPath: work) }
    return dir
}

/// The unpacks of each input: an image's layer in each style, and an ADD archive (no check).
let unpacks: [(style: WhiteoutStyle, checked: Bool)] = [(.overlayXattr, true), (.ociFiles, true), (.apply, true), (.apply, false)]

/// A limit that a small input can pass (a gzip or zstd bomb), well below the default.
let maxSize: Int64 = 64 << 20

func names(_ path: String) -> [String] {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard fd >= 0 else { fail("\(path) is no longer a directory") }
    defer { close(fd) }
    return (try? sortedNames(fd)) ?? []
}

/// A file's bytes (not FileManager.contents(atPath:), which leaks a buffer on an empty file).
func contents(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    guard fd >= 0 else { fail("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { break }
        out += buf[0..<n]
    }
    return out
}

func seconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let start = seconds()
    // libFuzzer's -timeout alarm (every timeout/2+1 s) interrupts a blocked system call, which then
    // fails with EINTR: a call that would block for ever shows up only as a slow input.
    defer { check(seconds() - start < 3, "the input took \(Int(seconds() - start)) s: did a call block (a FIFO opened)?") }
    let input = [UInt8](UnsafeBufferPointer(start: data, count: size))
    let dir = work + "/input"
    let layer = dir + "/layer"
    guard mkdir(dir, 0o700) == 0, mkdir(dir + "/outside", 0o700) == 0,
          FileManager.default.createFile(atPath: layer, contents: Data(input)) else {
        fail("cannot prepare \(dir): \(String(cString: strerror(errno)))")
    }
    let blob = StoredBlob(path: layer)

    // The decompressed stream, and its digest (the diff_id the checked unpacks expect).
    let hash = SHA256()
    _ = try? decompressLayer(blob, limit: maxSize) { hash.update($0) }
    let diffID = hash.finish()

    // Entry by entry, as the archive loaders read them.
    if let reader = try? TarReader(blob) {
        do {
            while let e = try reader.next() {
                for raw in [archive_entry_pathname(e), archive_entry_hardlink(e)].compactMap({ $0 }).map({ String(cString: $0) }) {
                    guard let name = try? safeEntryName(raw, archive: "fuzz") else { continue }
                    // Bytes, as the kernel splits names (not Characters: `/` + a combining mark is one).
                    let parts = name.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
                    check(name.utf8.first != UInt8(ascii: "/") && !parts.contains { $0.elementsEqual("..".utf8) },
                          "safeEntryName(\(raw)) gave \(name)")
                }
                _ = archive_entry_symlink(e).map { String(cString: $0) }
                var count = 0
                try reader.data { count += $0.count }
            }
        } catch {}
    }

    // Unpacked, each way into a root of its own.
    for (i, u) in unpacks.enumerated() {
        let root = dir + "/root-\(i)"
        guard mkdir(root, 0o700) == 0 else { fail("mkdir \(root): \(String(cString: strerror(errno)))") }
        _ = try? unpackLayer(blob, into: root, layerName: "fuzz", whiteouts: u.style,
                             check: u.checked ? LayerCheck(diffID: diffID, maxSize: maxSize) : nil)
    }

    // Nothing was written outside the roots, and the blob is what it was.
    let expected = ["layer", "outside"] + unpacks.indices.map { "root-\($0)" }
    check(names(dir) == expected, "unpack wrote outside its root: \(dir) holds \(names(dir))")
    check(names(dir + "/outside").isEmpty, "unpack wrote into \(dir)/outside: \(names(dir + "/outside"))")
    check(names(work) == ["input"], "unpack wrote outside its root: \(work) holds \(names(work))")
    check(contents(layer) == input, "unpack changed the layer blob")

    do {
        try removeTree(atPath: dir)
    } catch {
        fail("cannot remove \(dir): \(error)")
    }
    return 0
}
