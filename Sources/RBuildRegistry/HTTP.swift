import CRBuildCurl
import Foundation
import RBuildOCI

/// HTTP through libcurl: what the registry client and ADD's URL downloads use. One blocking
/// request per call (callers that want several at once use threads); bodies stream to a sink or
/// come back whole; uploads come from memory or straight from a file; GET and HEAD follow
/// redirects (registries send blob downloads to their storage). A registry's own CA is trusted
/// with CURLOPT_CAINFO — which is why this is libcurl and not URLSession, which on Linux can
/// neither trust an extra CA nor hand a 401 back without waiting for a credential.
public enum HTTP {
    public struct Response: Sendable {
        public var status: Int
        /// Header names lowercased.
        public var headers: [String: String]
        /// The body, unless a sink took it (an error's body is always kept here), at most
        /// `HTTP.maxKeptBody` bytes.
        public var body: Data

        public func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    public struct TransportError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    final class Call {
        var headers: [String: String] = [:]
        var body = Data()
        var sink: ((Int, UnsafeRawBufferPointer) throws -> Void)?
        var sinkError: Error?
        /// The body passed `maxKeptBody`: the transfer was stopped.
        var bodyTooLarge = false
        var upload: Data?
        var uploadBlob: BlobReader?
        /// Why the upload source stopped the transfer (a corrupt blob).
        var sourceError: Error?
        var offset = 0
    }

    /// libcurl's CURL_READFUNC_ABORT (curl.h, not visible to Swift): stops the transfer.
    static let readAbort = 0x1000_0000

    /// The most of a body kept in memory (an error page, a token): a server that sends more is
    /// cut off there, its transfer failed, rather than read to the end.
    public static let maxKeptBody = 4 << 20

    /// One request. `file` is the body, read through its check: a blob that turns out not to
    /// be what its digest says aborts the transfer before its last byte is sent. `sink` receives the body of a 200 or 206 as it arrives, with the status; `caFile` replaces the
    /// system's CA bundle. A transfer that fails (connection, TLS, a sink's error) throws.
    public static func perform(_ method: String, _ url: String, headers: [String: String] = [:], body: Data? = nil,
                               file: StoredBlob? = nil, caFile: String? = nil,
                               sink: ((_ status: Int, UnsafeRawBufferPointer) throws -> Void)? = nil) throws -> Response {
        let call = Call()
        call.sink = sink
        call.upload = body
        var size: Int64 = -1
        if let body { size = Int64(body.count) }
        if let file {
            let reader = try BlobReader(file)
            call.uploadBlob = reader
            size = reader.fileSize
        }
        var cstrings = headers.map { strdup("\($0.key): \($0.value)") } + [nil]
        defer { for p in cstrings { free(p) } }
        let owner = Unmanaged.passUnretained(call).toOpaque()
        var message = ""
        let status: Int = method.withCString { m in
            url.withCString { u in
                withOptionalCString(caFile) { ca in
                    cstrings.withUnsafeMutableBufferPointer { hp in
                        var r = rb_curl_request()
                        r.method = m
                        r.url = u
                        r.ca_file = ca
                        r.headers = UnsafePointer(OpaquePointer(hp.baseAddress))
                        r.body_size = size
                        r.owner = owner
                        r.body = { data, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            let buf = UnsafeRawBufferPointer(start: data, count: len)
                            if let sink = call.sink, req.pointee.status == 200 || req.pointee.status == 206 {
                                do { try sink(req.pointee.status, buf) } catch { call.sinkError = error; return 0 }
                            } else {
                                guard call.body.count + len <= HTTP.maxKeptBody else {
                                    call.bodyTooLarge = true
                                    return 0
                                }
                                call.body.append(contentsOf: buf)
                            }
                            return len
                        }
                        r.header = { data, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: len), as: UTF8.self)
                            if line.hasPrefix("HTTP/") { call.headers = [:] }   // a new response (a redirect, 100 Continue)
                            if let colon = line.firstIndex(of: ":") {
                                call.headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] =
                                    String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespacesAndNewlines)
                            }
                            return len
                        }
                        r.source = { buf, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            if let blob = call.uploadBlob {
                                do {
                                    return try blob.read(into: UnsafeMutableRawBufferPointer(start: buf, count: len))
                                } catch {
                                    call.sourceError = error
                                    return HTTP.readAbort
                                }
                            }
                            guard let data = call.upload, call.offset < data.count else { return 0 }
                            let n = min(len, data.count - call.offset)
                            data.withUnsafeBytes { _ = memcpy(buf!, $0.baseAddress! + call.offset, n) }
                            call.offset += n
                            return n
                        }
                        let s = withUnsafeMutablePointer(to: &r) { rb_curl_perform($0) }
                        if s < 0 { message = withUnsafeBytes(of: r.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
                        return s
                    }
                }
            }
        }
        if let e = call.sinkError ?? call.sourceError { throw e }
        if call.bodyTooLarge {
            throw RegistryError("\(method) \(url): the answer is larger than \(maxKeptBody >> 20) MiB: refused (stopped reading there)")
        }
        guard status > 0 else { throw TransportError(description: "\(method) \(url): \(message)") }
        return Response(status: status, headers: call.headers, body: call.body)
    }

    static func withOptionalCString<T>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
        guard let s else { return body(nil) }
        return s.withCString { body($0) }
    }
}
