import Foundation
import RBuildOCI

/// Failures talking to a registry: what was asked of which registry, and what came back.
public struct RegistryError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An image reference, normalised as Docker does: `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/app@sha256:…`, `ghcr.io/org/app:1.0`.
public struct Reference: Sendable, Equatable, CustomStringConvertible {
    /// `docker.io`, `localhost:5000`, `ghcr.io`.
    public var registry: String
    /// `library/busybox`, `org/app`.
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    public init(registry: String, repository: String, tag: String?, digest: Digest?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(parsing text: String) throws {
        func bad(_ why: String) -> RegistryError {
            RegistryError("invalid reference \"\(text)\": \(why)")
        }
        guard !text.isEmpty else { throw bad("empty") }
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) } catch { throw bad("\(error)") }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        if let tag {
            let ok = tag.count <= 128 && tag.first.map { $0.isLetter || $0.isNumber || $0 == "_" } == true
                && tag.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
            guard ok else { throw bad("tag \"\(tag)\" must be up to 128 of [A-Za-z0-9_.-], not starting with . or -") }
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = "docker.io"
        // The first component names a registry when it has a dot or a port, or is localhost.
        if components.count > 1, let first = components.first,
           first.contains(".") || first.contains(":") || first == "localhost" {
            registry = first
            components.removeFirst()
        }
        guard Reference.isRegistry(registry) else {
            throw bad("registry \"\(registry)\" must be a host name, an IPv4 address or a bracketed IPv6 address, and a port")
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = "docker.io" }
        if registry == "docker.io" && components.count == 1 { components.insert("library", at: 0) }
        for c in components {
            guard !c.isEmpty else { throw bad("empty path component") }
            guard Reference.isPathComponent(c) else {
                throw bad("repository path component \"\(c)\" must be lowercase letters and digits, separated by one '.', one or two '_' or any '-'")
            }
        }
        let repository = components.joined(separator: "/")
        // distribution's limit is on the name as a registry sees it: docker.io/library/… counts.
        guard registry.utf8.count + 1 + repository.utf8.count <= 255 else {
            throw bad("the name \(registry)/\(repository) is longer than 255 characters")
        }
        self.registry = registry
        self.repository = repository
        self.tag = tag ?? (digest == nil ? "latest" : nil)
        self.digest = digest
    }

    // The grammar of github.com/distribution/reference (regexp.go), which registries enforce.

    /// `host[:port]`: dot-separated components of letters, digits and inner hyphens, or a
    /// bracketed IPv6 address; the port, digits.
    static func isRegistry(_ text: String) -> Bool {
        var host = Substring(text)
        if let colon = text.lastIndex(of: ":"), !text[colon...].contains("]") {
            let port = text[text.index(after: colon)...]
            guard !port.isEmpty, port.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return false }
            host = text[..<colon]
        }
        if host.hasPrefix("[") {
            return host.count > 2 && host.hasSuffix("]")
                && host.dropFirst().dropLast().utf8.allSatisfy { $0 == UInt8(ascii: ":") || isHexDigit($0) }
        }
        return host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { c in
            c.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") }
                && c.utf8.first.map(isAlphanumeric) == true && c.utf8.last.map(isAlphanumeric) == true
        }
    }

    /// `[a-z0-9]+` runs joined by one `.`, one or two `_`, or any number of `-`.
    static func isPathComponent(_ text: String) -> Bool {
        var separator: [UInt8] = []
        for b in text.utf8 {
            if (0x61...0x7a).contains(b) || (0x30...0x39).contains(b) {
                separator = []
            } else if b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") {
                separator.append(b)
                let ok = separator == [UInt8(ascii: ".")] || separator == [UInt8(ascii: "_")]
                    || separator == [UInt8(ascii: "_"), UInt8(ascii: "_")] || separator.allSatisfy { $0 == UInt8(ascii: "-") }
                guard ok else { return false }
            } else {
                return false
            }
        }
        let first = text.utf8.first, last = text.utf8.last
        return first.map(isLowerAlphanumeric) == true && last.map(isLowerAlphanumeric) == true
    }

    private static func isLowerAlphanumeric(_ b: UInt8) -> Bool { (0x61...0x7a).contains(b) || (0x30...0x39).contains(b) }
    private static func isAlphanumeric(_ b: UInt8) -> Bool { isLowerAlphanumeric(b) || (0x41...0x5a).contains(b) }
    private static func isHexDigit(_ b: UInt8) -> Bool { (0x30...0x39).contains(b) || (0x61...0x66).contains(b) || (0x41...0x46).contains(b) }

    /// `docker.io/library/busybox:latest`, `localhost:5000/app@sha256:…`.
    public var description: String {
        registry + "/" + repository + (tag.map { ":" + $0 } ?? "") + (digest.map { "@" + $0.description } ?? "")
    }

    /// What the manifest endpoint takes: the digest when there is one, else the tag.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// The host the API is served from (Docker Hub's API lives on registry-1.docker.io).
    public var apiHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    /// Plain HTTP for localhost and 127.0.0.1 (any port) and for the registries listed, comma
    /// separated, in RBUILD_INSECURE_REGISTRIES; HTTPS otherwise.
    public var usesPlainHTTP: Bool {
        let host = registry.split(separator: ":").first.map(String.init) ?? registry
        if ["localhost", "127.0.0.1", "[::1]"].contains(host) { return true }
        let insecure = ProcessInfo.processInfo.environment["RBUILD_INSECURE_REGISTRIES"]?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
        return insecure.contains(registry) || insecure.contains(host)
    }
}
