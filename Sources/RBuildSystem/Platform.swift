#if canImport(Glibc)
import Glibc
#endif

// The one platform type: the Dockerfile frontend (TARGETPLATFORM…), the image documents, the
// registry and the runtime's emulators all parse, print and compare platforms here, with one
// table of aliases. Matching an index's entries against a wanted platform (containerd's rules)
// follows from `compatible`.

/// A platform that cannot be parsed: the message says what was given and what is expected.
public struct PlatformError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An OCI platform, normalised the way containerd and buildx do (arm64's v8 is implied,
/// arm is v7 unless said otherwise, x86_64 is amd64).
public struct Platform: Codable, Hashable, Sendable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String = "linux", architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
        normalise()
    }

    /// `linux/arm64`, `linux/arm/v7`, `arm64`, `amd64`…
    public init(parsing text: String) throws {
        var parts = text.lowercased().split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 1 { parts.insert("linux", at: 0) }
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
            throw PlatformError("invalid platform \"\(text)\": expected os/architecture[/variant], e.g. linux/arm64")
        }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
        let known = ["amd64", "arm64", "arm", "386", "riscv64", "ppc64le", "s390x", "mips64le", "loong64"]
        guard known.contains(architecture) else {
            throw PlatformError("unknown architecture \"\(parts[1])\" in platform \(text) (known: \(known.joined(separator: ", ")))")
        }
    }

    public mutating func normalise() {
        switch architecture {
        case "x86_64", "x86-64": architecture = "amd64"
        case "aarch64": architecture = "arm64"
        case "i386", "i486", "i586", "i686": architecture = "386"
        case "armhf", "armv7l", "armv8l": architecture = "arm"; if variant == nil { variant = "v7" }
        case "armel", "armv6l": architecture = "arm"; if variant == nil { variant = "v6" }
        default: break
        }
        if architecture == "arm64" && (variant == "v8" || variant == "8") { variant = nil }
        if architecture == "arm" {
            if variant == nil { variant = "v7" }
            if let v = variant, !v.hasPrefix("v") { variant = "v" + v }
        }
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    /// The machine's own platform.
    public static var host: Platform {
        var u = utsname()
        uname(&u)
        let m = withUnsafeBytes(of: &u.machine) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return Platform(architecture: m)
    }
}

// Matching (containerd's `platforms` package).
extension Platform {
    /// The normal form: architecture aliases resolved (x86_64, aarch64, armhf…), arm64's implied
    /// `v8` and amd64's implied `v1` dropped, arm's default `v7` filled in. Documents keep the
    /// spelling they came with; only comparisons use this.
    public var normalized: Platform {
        var p = self
        p.os = p.os.lowercased()
        p.architecture = p.architecture.lowercased()
        p.variant = p.variant?.lowercased()
        if p.variant == "" { p.variant = nil }
        p.normalise()
        if p.architecture == "amd64" && p.variant == "v1" { p.variant = nil }
        p.osVersion = nil
        p.osFeatures = nil
        return p
    }

    /// Whether two spellings name the same platform (`linux/arm64` and `linux/arm64/v8`).
    public func isSame(as other: Platform) -> Bool {
        let a = normalized, b = other.normalized
        return a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// The platforms an image may be for so that it runs as this one, best first: itself, then
    /// older variants of the same architecture (amd64/v3 → v2 → plain; arm/v7 → v6 → v5;
    /// arm64/v9 → plain) — containerd's `platforms.Only` without its amd64 → 386 step: an amd64
    /// build silently based on a 32-bit image is a surprise no user asks for (BuildKit resolves
    /// bases strictly too). Levels above the last that exists (amd64/v4, arm/v8) step down from
    /// it: a wanted `amd64/v999999999` (FROM --platform, a build argument) would otherwise list
    /// a billion platforms (found by scripts/fuzz/reference).
    public var compatible: [Platform] {
        let p = normalized
        var out = [p]
        func level(_ v: String?) -> Int? { v.flatMap { $0.hasPrefix("v") ? Int($0.dropFirst()) : nil } }
        switch p.architecture {
        case "amd64":
            if let n = level(p.variant), n > 1 {
                for v in stride(from: min(n - 1, 4), through: 2, by: -1) {
                    out.append(Platform(os: p.os, architecture: "amd64", variant: "v\(v)"))
                }
                out.append(Platform(os: p.os, architecture: "amd64"))
            }
        case "arm":
            if let n = level(p.variant), n > 5 {
                for v in stride(from: min(n - 1, 8), through: 5, by: -1) {
                    out.append(Platform(os: p.os, architecture: "arm", variant: "v\(v)"))
                }
            }
        case "arm64":
            if p.variant != nil { out.append(Platform(os: p.os, architecture: "arm64")) }
        default:
            break
        }
        return out
    }
}

