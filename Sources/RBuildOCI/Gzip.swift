import CZlib
import Foundation

/// `bytes` as one gzip member (build history logs; layers stream through `LayerSink` instead).
package func gzip(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
    gzipMember(bytes, level: level)
}

/// The bytes of a gzip stream, at most `limit` of them: nil when `bytes` is not gzip, is cut
/// short, or would unpack to more than `limit` (a log file is read whole, so it is bounded).
package func gunzip(_ bytes: [UInt8], limit: Int = 256 << 20) -> [UInt8]? {
    var zs = z_stream()
    guard inflateInit2_(&zs, 31, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&zs) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    return bytes.withUnsafeBytes { inBuf -> [UInt8]? in
        zs.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress?.assumingMemoryBound(to: UInt8.self))
        zs.avail_in = UInt32(inBuf.count)
        while true {
            let (rc, produced) = chunk.withUnsafeMutableBytes { outBuf -> (Int32, Int) in
                zs.next_out = outBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
                zs.avail_out = UInt32(outBuf.count)
                let rc = inflate(&zs, Z_NO_FLUSH)
                return (rc, outBuf.count - Int(zs.avail_out))
            }
            out += chunk[0..<produced]
            if out.count > limit { return nil }
            if rc == Z_STREAM_END { return out }
            if rc != Z_OK || (produced == 0 && zs.avail_in == 0) { return nil }
        }
    }
}
