import Foundation
import RBuildSolver
import RBuildSystem
import Synchronization

/// The node protocol's unit over a byte stream (ssh's stdin and stdout): a kind byte, a 4-byte
/// big-endian length and that many bytes. Written here: a few lines that no library fits (the
/// stream is rbuild talking to itself).
///
/// To the node: `header` (the request, JSON), `secret`s, `context` chunks (a tar of the build
/// context), `end`; afterwards the local side keeps the stream open, and its end (EOF) tells the
/// node to stop. From the node: `event`s (progress), then per blob a `blob` (its descriptor,
/// JSON) and its `data` chunks, then the `result` (JSON) or a `failure` (JSON).
public enum FrameKind: UInt8, Sendable {
    case header = 0x48, secret = 0x53, context = 0x43, end = 0x45
    case event = 0x50, blob = 0x42, data = 0x44, result = 0x52, failure = 0x58
}

public enum Frames {
    /// The most bytes one frame carries (a context or blob goes in chunks of at most this).
    public static let maximum = 1 << 20
}

/// Writes frames to a stream, one at a time from any thread.
public final class FrameWriter: Sendable {
    let fd: Int32
    let what: String
    let lock = Mutex(())

    public init(fd: Int32, what: String) {
        self.fd = fd
        self.what = what
    }

    public func write(_ kind: FrameKind, _ bytes: UnsafeRawBufferPointer) throws {
        precondition(bytes.count <= Frames.maximum)
        let n = UInt32(bytes.count)
        let head: [UInt8] = [kind.rawValue, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
        try lock.withLock { _ in
            try head.withUnsafeBytes { try writeFully($0) }
            try writeFully(bytes)
        }
    }

    public func write(_ kind: FrameKind, _ bytes: [UInt8] = []) throws {
        try bytes.withUnsafeBytes { try write(kind, $0) }
    }

    /// `value` as JSON in one frame.
    public func write<T: Encodable>(_ kind: FrameKind, json value: T) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        try write(kind, Array(try e.encode(value)))
    }

    /// `bytes` in as many frames as it takes.
    public func write(chunked kind: FrameKind, _ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        repeat {
            let n = min(Frames.maximum, bytes.count - off)
            try write(kind, UnsafeRawBufferPointer(rebasing: bytes[off..<off + n]))
            off += n
        } while off < bytes.count
    }

    private func writeFully(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            try writeAll(fd, bytes)
        } catch let e as SystemError {
            throw NodeError("\(what): the connection closed (\(errnoText(e.errno)))")
        }
    }
}

/// Reads frames from a stream.
public final class FrameReader: @unchecked Sendable {   // one reader thread at a time
    let fd: Int32
    let what: String
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0, end = 0

    public init(fd: Int32, what: String) {
        self.fd = fd
        self.what = what
    }

    /// The next frame; nil at the end of the stream (between frames).
    public func next() throws -> (kind: FrameKind, bytes: [UInt8])? {
        guard let head = try read(5, atEndOK: true) else { return nil }
        guard let kind = FrameKind(rawValue: head[0]) else {
            throw NodeError("\(what): the stream is not rbuild's node protocol (byte \(head[0])); is the node's rbuild another version?")
        }
        let n = Int(head[1]) << 24 | Int(head[2]) << 16 | Int(head[3]) << 8 | Int(head[4])
        guard n <= Frames.maximum else { throw NodeError("\(what): a frame of \(n) bytes, more than the protocol allows") }
        return (kind, try read(n, atEndOK: false)!)
    }

    /// The next frame, which must be there.
    public func expect() throws -> (kind: FrameKind, bytes: [UInt8]) {
        guard let f = try next() else { throw NodeError("\(what): the connection ended early") }
        return f
    }

    private func read(_ count: Int, atEndOK: Bool) throws -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            if start == end {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw NodeError("\(what): reading failed: \(errnoText(errno))")
                }
                if n == 0 {
                    if out.isEmpty && atEndOK { return nil }
                    throw NodeError("\(what): the connection ended in the middle of a message")
                }
                start = 0
                end = n
            }
            let take = min(count - out.count, end - start)
            out += buffer[start..<start + take]
            start += take
        }
        return out
    }
}
