import CZlib
import CZstd
import Foundation
import RBuildSystem

/// How large a layer may be once decompressed: `--max-layer-size`, else RBUILD_MAX_LAYER_SIZE,
/// else 64 GiB. A layer is a few MiB to a few GiB; a gzip or zstd stream a thousand times
/// smaller than what it inflates to (a "bomb") stops at the limit instead of filling the disk.
public enum MaxLayerSize {
    public static let defaultValue: Int64 = 64 << 30
    public static let variable = "RBUILD_MAX_LAYER_SIZE"

    /// The limit for a command: `flag` (the option's text) when given, else the environment's,
    /// else the default. A text that is not a size is an error naming where it came from.
    public static func resolve(flag: String?) throws -> Int64 {
        if let flag { return try parse(flag, what: "--max-layer-size \(flag)") }
        if let env = ProcessInfo.processInfo.environment[variable], !env.isEmpty {
            return try parse(env, what: "\(variable)=\(env)")
        }
        return defaultValue
    }

    static func parse(_ text: String, what: String) throws -> Int64 {
        guard let n = parseByteSize(text), n > 0 else {
            throw OCIError(.invalidArgument, "\(what): not a size (such as 64GiB, 512m or 1073741824)")
        }
        return n
    }

    /// `n` bytes for messages: whole GiB, MiB or KiB when it is one, else bytes.
    public static func describe(_ n: Int64) -> String {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where n >= 1 << shift && n % (1 << shift) == 0 {
            return "\(n >> shift) \(unit)"
        }
        return "\(n) bytes"
    }
}

/// A layer's uncompressed tar, pulled from its blob (gzip, zstd or plain, told by its first
/// bytes, whatever its descriptor's media type says): the blob checked against
/// its digest as it is read; the uncompressed bytes counted — one past `limit` is refused,
/// naming the layer, before it is handed out — and, when `diffID` is given (or `hashing`),
/// hashed and compared with it at the end, as containerd's applier checks the diff_id of what
/// it unpacked. The one decompressor of layers: unpacking (through `TarReader`), checking a
/// load's diff_ids and recompressing all read through it.
public final class LayerStream {
    /// For messages: `layer sha256:…`.
    public let name: String
    let source: BlobReader
    let type: String
    let limit: Int64
    let expected: Digest?
    let hasher: SHA256?
    /// Uncompressed bytes handed out so far.
    public private(set) var count: Int64 = 0
    /// The digest of the uncompressed tar, once all of it was read (with `diffID` or `hashing`).
    public private(set) var diffID: Digest?
    let input: UnsafeMutableRawBufferPointer
    var zs = z_stream()
    var zstd: OpaquePointer?
    var zin = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
    /// gzip: the member being read has ended (another may follow: pigz and rbuild's own parallel
    /// gzip write several).
    var memberEnded = false
    /// zstd: the hint of the last call that did something (0: a frame ended and was flushed),
    /// and whether that call filled the buffer (the context may hold more output).
    var zstdHint = 0
    var zstdPending = false
    var sourceEnded = false
    var ended = false

    public init(_ blob: StoredBlob, name: String? = nil, diffID: Digest? = nil, hashing: Bool = false,
                limit: Int64 = MaxLayerSize.defaultValue) throws {
        self.name = name ?? blob.digest.map { "layer \($0)" } ?? "layer \((blob.path as NSString).lastPathComponent)"
        // The reader first: a blob that is gone is reported as missing (with what to do).
        source = try BlobReader(blob)
        type = try detectLayerMediaType(blob.path)
        self.limit = limit
        expected = diffID
        // A plain layer whose blob digest is its diff_id is checked by the blob's own hash.
        let checkedByDigest = type == MediaType.ociLayer && diffID != nil && blob.digest == diffID
        hasher = (diffID != nil && !checkedByDigest) || hashing ? SHA256() : nil
        input = .allocate(byteCount: 1 << 20, alignment: 16)
        switch type {
        case MediaType.ociLayerGzip:
            // 15 + 32: zlib detects the gzip header.
            // Every stored property is set: a throw from here runs deinit, which frees `input`.
            guard inflateInit2_(&zs, 47, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                throw OCIError(.io, "zlib init failed")
            }
        case MediaType.ociLayerZstd:
            // libzstd's default window limit (2^27) bounds the memory a frame can ask for.
            zstd = ZSTD_createDCtx()
        default:
            break
        }
    }

    deinit {
        if type == MediaType.ociLayerGzip { inflateEnd(&zs) }
        if let zstd { ZSTD_freeDCtx(zstd) }
        input.deallocate()
    }

    /// Up to `buffer.count` uncompressed bytes; 0 at the end, once the blob was read whole and
    /// checked (and the diff_id compared). Throws `corruptBlob` for a stream that does not
    /// decode or ends early (the blob's own digest failure first, when that is the cause),
    /// `tooLarge` past the limit, `diffIDMismatch` at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !ended, buffer.count > 0 else { return 0 }
        let n: Int
        do {
            switch type {
            case MediaType.ociLayerGzip: n = try inflateSome(into: buffer)
            case MediaType.ociLayerZstd: n = try zstdSome(into: buffer)
            default: n = try source.read(into: buffer)
            }
        } catch let e as OCIError where e.code == .corruptBlob {
            // A stream that does not decode may be a blob that is not what its digest says: read
            // it to the end to tell, and report that first (it says what to do).
            try source.finish()
            throw e
        }
        if n == 0 {
            try end()
            return 0
        }
        guard count + Int64(n) <= limit else {
            throw OCIError(.tooLarge, "\(name) unpacks to more than \(MaxLayerSize.describe(limit)), the limit (--max-layer-size, \(MaxLayerSize.variable)): refused")
        }
        count += Int64(n)
        hasher?.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        return n
    }

    /// Reads what is left (past the tar's end-of-archive blocks) and does the end's checks.
    public func finish() throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buf.deallocate() }
        while try read(into: buf) > 0 {}
    }

    func end() throws {
        ended = true
        try source.finish()
        guard let hasher else {
            diffID = expected   // nil, or the blob's digest, just checked
            return
        }
        let got = hasher.finish()
        diffID = got
        if let expected, got != expected {
            throw OCIError(.diffIDMismatch, "\(name) unpacks to \(got), not to \(expected), the diff_id its image's config gives: refused")
        }
    }

    func inflateSome(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            if zs.avail_in == 0 && !sourceEnded {
                let n = try source.read(into: input)
                if n == 0 {
                    sourceEnded = true
                } else {
                    zs.next_in = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    zs.avail_in = UInt32(n)
                }
            }
            if zs.avail_in == 0 {
                guard memberEnded else { throw OCIError(.corruptBlob, "\(name) is truncated: the gzip stream ends early") }
                return 0
            }
            if memberEnded {
                inflateReset(&zs)
                memberEnded = false
            }
            zs.next_out = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
            zs.avail_out = UInt32(min(out.count, Int(UInt32.max)))
            let before = Int(zs.avail_out)
            let rc = inflate(&zs, Z_NO_FLUSH)
            if rc == Z_STREAM_END {
                memberEnded = true
            } else if rc != Z_OK && rc != Z_BUF_ERROR {
                throw OCIError(.corruptBlob, "\(name) is not valid gzip (zlib error \(rc))")
            }
            let produced = before - Int(zs.avail_out)
            if produced > 0 { return produced }
        }
    }

    func zstdSome(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            // A call that filled the buffer may have left output in the context: it is asked
            // again before more input is read or the end is declared.
            if zin.pos == zin.size && !zstdPending {
                if !sourceEnded {
                    let n = try source.read(into: input)
                    if n == 0 { sourceEnded = true } else { zin = ZSTD_inBuffer(src: input.baseAddress, size: n, pos: 0) }
                }
                if sourceEnded {
                    guard zstdHint == 0 else { throw OCIError(.corruptBlob, "\(name) is truncated: the zstd stream ends early") }
                    return 0
                }
            }
            let consumed = zin.pos
            var zout = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            let rc = ZSTD_decompressStream(zstd, &zout, &zin)
            if ZSTD_isError(rc) != 0 {
                throw OCIError(.corruptBlob, "\(name) is not valid zstd: \(String(cString: ZSTD_getErrorName(rc)))")
            }
            // Only a call that did something says where the stream is (0: a frame ended and was
            // flushed); an idle one would ask for the next frame's header.
            if zout.pos > 0 || zin.pos != consumed { zstdHint = rc }
            zstdPending = zout.pos == zout.size
            if zout.pos > 0 { return zout.pos }
        }
    }
}

/// gzip, zstd or plain tar, from the first bytes.
func detectLayerMediaType(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw OCIError(.io, "cannot open \(path)") }
    defer { close(fd) }
    var magic = [UInt8](repeating: 0, count: 4)
    _ = read(fd, &magic, 4)
    if magic[0] == 0x1f && magic[1] == 0x8b { return MediaType.ociLayerGzip }
    if magic == [0x28, 0xb5, 0x2f, 0xfd] { return MediaType.ociLayerZstd }
    return MediaType.ociLayer
}

/// The sha256 of a layer's uncompressed tar (its diff_id). A truncated or corrupt stream is an
/// error, not a short digest.
func uncompressedDigest(_ blob: StoredBlob, name: String? = nil, limit: Int64 = MaxLayerSize.defaultValue) throws -> Digest {
    let stream = try LayerStream(blob, name: name, hashing: true, limit: limit)
    try stream.finish()
    return stream.diffID!
}

/// Streams a layer blob's uncompressed tar (gzip, zstd or plain) to `each`, the blob checked
/// against its digest as it is read. A truncated or corrupt stream is an error.
public func decompressLayer(_ blob: StoredBlob, limit: Int64 = MaxLayerSize.defaultValue,
                            _ each: (UnsafeRawBufferPointer) throws -> Void) throws {
    let stream = try LayerStream(blob, limit: limit)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let n = try stream.read(into: buf)
        if n == 0 { return }
        try each(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
    }
}
