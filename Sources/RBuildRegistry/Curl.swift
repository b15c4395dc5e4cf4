import CRBuildCurl
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Requests through libcurl, for registries with their own CA: URLSession on Linux cannot be
/// told to trust one. The CA comes from RBUILD_REGISTRY_CA (a PEM file, for every registry), else
/// from `ca.crt` in the certs.d directory of the registry's host:port, as docker and podman keep
/// them (`~/.config/containers/certs.d`, `/etc/containers/certs.d`, `/etc/docker/certs.d`).
enum Curl {
    static func caFile(for registry: String) -> String? {
        let env = ProcessInfo.processInfo.environment
        if let f = env["RBUILD_REGISTRY_CA"], !f.isEmpty { return f }
        let home = env["HOME"] ?? NSHomeDirectory()
        for dir in [home + "/.config/containers/certs.d", "/etc/containers/certs.d", "/etc/docker/certs.d"] {
            let f = dir + "/" + registry + "/ca.crt"
            if access(f, R_OK) == 0 { return f }
        }
        return nil
    }

    final class Call {
        var headers: [String: String] = [:]
        var body = Data()
        var sink: ((UnsafeRawBufferPointer) throws -> Void)?
        var sinkError: Error?
        var upload: Data?
        var uploadFD: Int32 = -1
        var offset = 0
    }

    /// One request; the body goes to `sink` when given (else it is returned).
    static func perform(_ method: String, _ url: String, headers: [String: String], body: Data? = nil, file: String? = nil,
                        caFile: String, sink: ((UnsafeRawBufferPointer) throws -> Void)? = nil) throws -> (HTTPURLResponse, Data) {
        let call = Call()
        call.sink = sink
        call.upload = body
        var size: Int64 = -1
        if let body { size = Int64(body.count) }
        if let file {
            call.uploadFD = open(file, O_RDONLY | O_CLOEXEC)
            guard call.uploadFD >= 0 else { throw RegistryError("cannot read \(file): \(String(cString: strerror(errno)))") }
            var st = stat()
            fstat(call.uploadFD, &st)
            size = Int64(st.st_size)
        }
        defer { if call.uploadFD >= 0 { close(call.uploadFD) } }
        let lines = headers.map { "\($0.key): \($0.value)" }
        var cstrings = lines.map { strdup($0) } + [nil]
        defer { for p in cstrings { free(p) } }
        let owner = Unmanaged.passUnretained(call).toOpaque()
        let status: Int = method.withCString { m in
            url.withCString { u in
                caFile.withCString { ca in
                    cstrings.withUnsafeMutableBufferPointer { hp in
                        var r = rb_curl_request()
                        r.method = m
                        r.url = u
                        r.ca_file = ca
                        r.headers = UnsafePointer(OpaquePointer(hp.baseAddress))
                        r.body_size = size
                        r.owner = owner
                        r.timeout_seconds = 0
                        r.body = { data, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            let buf = UnsafeRawBufferPointer(start: data, count: len)
                            // Only a success's body goes to the sink (an error's is kept for the message).
                            if let sink = call.sink, req.pointee.status == 200 || req.pointee.status == 206 {
                                do { try sink(buf) } catch { call.sinkError = error; return 0 }
                            } else {
                                call.body.append(contentsOf: buf)
                            }
                            return len
                        }
                        r.header = { data, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: len), as: UTF8.self)
                            if line.hasPrefix("HTTP/") { call.headers = [:] }   // a new response (after 100 Continue)
                            if let colon = line.firstIndex(of: ":") {
                                call.headers[String(line[..<colon]).trimmingCharacters(in: .whitespaces)] =
                                    String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespacesAndNewlines)
                            }
                            return len
                        }
                        r.source = { buf, len, ctx in
                            let req = ctx!.assumingMemoryBound(to: rb_curl_request.self)
                            let call = Unmanaged<Call>.fromOpaque(req.pointee.owner).takeUnretainedValue()
                            if call.uploadFD >= 0 {
                                let n = read(call.uploadFD, buf!, len)
                                return n > 0 ? n : 0
                            }
                            guard let data = call.upload, call.offset < data.count else { return 0 }
                            let n = min(len, data.count - call.offset)
                            data.withUnsafeBytes { _ = memcpy(buf!, $0.baseAddress! + call.offset, n) }
                            call.offset += n
                            return n
                        }
                        let s = withUnsafeMutablePointer(to: &r) { rb_curl_perform($0) }
                        if s < 0 {
                            let message = withUnsafeBytes(of: r.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                            call.sinkError = call.sinkError ?? RegistryError("\(method) \(url): \(message)")
                        }
                        return s
                    }
                }
            }
        }
        if let e = call.sinkError { throw e }
        guard let u = URL(string: url), let http = HTTPURLResponse(url: u, statusCode: status, httpVersion: "HTTP/1.1", headerFields: call.headers) else {
            throw RegistryError("\(method) \(url): no HTTP response")
        }
        return (http, call.body)
    }
}
