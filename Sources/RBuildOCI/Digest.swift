import CCrypto

/// A content digest. rbuild stores and verifies sha256 only; anything else is refused by name.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let hex: String

    public var algorithm: String { "sha256" }
    public var description: String { "sha256:" + hex }

    /// Parses `sha256:<64 lowercase hex>`.
    public init(parsing text: String) throws {
        var text = text
        if let d = text.withUTF8({ Digest(utf8: $0) }) {
            self = d
            return
        }
        guard let colon = text.firstIndex(of: ":") else {
            throw OCIError(.invalidDigest, "invalid digest \"\(text)\": expected sha256:<64 hex digits>")
        }
        let algorithm = text[..<colon]
        guard algorithm == "sha256" else {
            throw OCIError(.invalidDigest, "unsupported digest algorithm \(algorithm) in \(text): rbuild stores and verifies sha256 only")
        }
        throw OCIError(.invalidDigest, "invalid digest \"\(text)\": a sha256 digest is 64 lowercase hex digits")
    }

    /// `sha256:<64 lowercase hex>` as UTF-8 bytes, or nil when they are anything else. One pass
    /// over the bytes: a warm build parses one digest per context file from the cache index, and
    /// Character-wise slicing cost more than the stat of the file.
    public init?(utf8 text: UnsafeBufferPointer<UInt8>) {
        let prefix: StaticString = "sha256:"
        guard text.count == 71, let p = text.baseAddress, (0..<7).allSatisfy({ p[$0] == prefix.utf8Start[$0] }) else { return nil }
        for i in 7..<71 {
            let c = p[i]
            guard (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) else { return nil }
        }
        self.hex = String(decoding: UnsafeBufferPointer(rebasing: text[7...]), as: UTF8.self)
    }

    init(hex: String) { self.hex = hex }

    /// The digest of `bytes`.
    public static func of(_ bytes: [UInt8]) -> Digest {
        let h = SHA256()
        h.update(bytes)
        return h.finish()
    }

    public static func < (a: Digest, b: Digest) -> Bool { a.hex < b.hex }

    public init(from decoder: Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Streaming sha256 over OpenSSL's low-level interface (see CCrypto's shim.h for why not EVP).
/// `finish` may be called once.
public final class SHA256 {
    private let ctx = UnsafeMutablePointer<SHA256_CTX>.allocate(capacity: 1)

    public init() {
        SHA256_Init(ctx)
    }

    deinit { ctx.deallocate() }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { SHA256_Update(ctx, bytes.baseAddress, bytes.count) }
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public func finish() -> Digest {
        var out = [UInt8](repeating: 0, count: 32)
        SHA256_Final(&out, ctx)
        let table = Array("0123456789abcdef".utf8)
        var hex = [UInt8]()
        hex.reserveCapacity(64)
        for b in out { hex.append(table[Int(b >> 4)]); hex.append(table[Int(b & 15)]) }
        return Digest(hex: String(decoding: hex, as: UTF8.self))
    }
}
