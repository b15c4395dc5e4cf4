#if canImport(Glibc)
import Glibc
#endif
import CSQLite
import Foundation
import RBuildSnapshots
import RBuildSystem

/// One package found in a root filesystem, for the SBOM.
public struct FoundPackage: Sendable, Equatable, Hashable {
    public enum Kind: String, Sendable, Codable {
        case deb, apk, rpm, pypi, npm
    }
    public var kind: Kind
    public var name: String
    public var version: String
    public var architecture: String?
    public var license: String?
    /// The distribution's source package or origin, where the database names one.
    public var source: String?
    /// Where it was found (the database, or the package's metadata file), inside the root.
    public var location: String

    public init(kind: Kind, name: String, version: String, architecture: String? = nil, license: String? = nil,
                source: String? = nil, location: String) {
        self.kind = kind
        self.name = name
        self.version = version
        self.architecture = architecture
        self.license = license
        self.source = source
        self.location = location
    }

    /// Its package URL (github.com/package-url/purl-spec), `namespace` the distribution for
    /// system packages (from /etc/os-release).
    public func purl(distribution: String?) -> String {
        func enc(_ s: String) -> String {
            s.addingPercentEncoding(withAllowedCharacters: CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-_~+"))) ?? s
        }
        var qualifiers: [String] = []
        if let architecture { qualifiers.append("arch=" + enc(architecture)) }
        let q = qualifiers.isEmpty ? "" : "?" + qualifiers.joined(separator: "&")
        switch kind {
        case .deb, .apk, .rpm:
            let ns = distribution.map { enc($0) + "/" } ?? ""
            return "pkg:\(kind.rawValue)/\(ns)\(enc(name))@\(enc(version))\(q)"
        case .pypi:
            return "pkg:pypi/\(enc(name.lowercased().replacingOccurrences(of: "_", with: "-")))@\(enc(version))"
        case .npm:
            // A scoped name keeps its scope as the namespace: pkg:npm/%40scope/name@1.0.
            return "pkg:npm/\(name.split(separator: "/").map { enc(String($0)) }.joined(separator: "/"))@\(enc(version))"
        }
    }
}

/// The package databases of a root filesystem, read as the final image has them (through a
/// snapshot's view: whiteouts honoured, every path resolved inside the root, regular files only,
/// each read size-capped). Written here: no Swift library reads dpkg, apk or rpm databases.
public enum PackageScanner {
    /// Every package found, sorted by kind, name and version; and the distribution's id
    /// (`ID` of /etc/os-release) for package URLs.
    public static func scan(_ view: SnapshotView) -> (packages: [FoundPackage], distribution: String?) {
        var found: [FoundPackage] = []
        found += dpkg(view)
        found += apk(view)
        found += rpm(view)
        found += languagePackages(view)
        let unique = Array(Set(found)).sorted {
            ($0.kind.rawValue, $0.name, $0.version, $0.location) < ($1.kind.rawValue, $1.name, $1.version, $1.location)
        }
        return (unique, osRelease(view)["ID"])
    }

    static func text(_ view: SnapshotView, _ path: String, limit: Int = 64 << 20) -> String? {
        guard let bytes = try? view.readFile(path, limit: limit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// /etc/os-release (else /usr/lib/os-release) as KEY → value, quotes removed.
    public static func osRelease(_ view: SnapshotView) -> [String: String] {
        guard let t = text(view, "/etc/os-release") ?? text(view, "/usr/lib/os-release") else { return [:] }
        var out: [String: String] = [:]
        for line in t.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, let f = value.first, f == "\"" || f == "'", value.last == f { value = String(value.dropFirst().dropLast()) }
            out[String(line[..<eq])] = value
        }
        return out
    }

    /// RFC 822-style paragraphs (dpkg's status, Python's METADATA headers): fields by name, a
    /// continuation line (leading space) appended to the field before it.
    static func paragraphs(_ text: String) -> [[String: String]] {
        var out: [[String: String]] = []
        var current: [String: String] = [:]
        var last: String?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.trimmingCharacters(in: .whitespaces).isEmpty {
                if !current.isEmpty { out.append(current) }
                current = [:]
                last = nil
                continue
            }
            if line.first == " " || line.first == "\t" {
                if let last { current[last, default: ""] += "\n" + line.trimmingCharacters(in: .whitespaces) }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            if current[key] == nil {
                current[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            last = key
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    // MARK: dpkg

    /// /var/lib/dpkg/status (installed packages only) and /var/lib/dpkg/status.d/* (distroless).
    static func dpkg(_ view: SnapshotView) -> [FoundPackage] {
        var files = ["/var/lib/dpkg/status"]
        if let dir = try? view.directory(try view.resolve("/var/lib/dpkg/status.d", followLast: true)) {
            for e in (try? view.entries(dir)) ?? [] where e.type == S_IFREG && !e.name.hasSuffix(".md5sums") {
                files.append("/var/lib/dpkg/status.d/" + e.name)
            }
        }
        var out: [FoundPackage] = []
        for file in files {
            guard let t = text(view, file) else { continue }
            for p in paragraphs(t) {
                guard let name = p["Package"], let version = p["Version"] else { continue }
                if let status = p["Status"], !status.hasSuffix(" installed") { continue }
                let source = p["Source"].map { String($0.split(separator: " ").first ?? "") }
                out.append(FoundPackage(kind: .deb, name: name, version: version, architecture: p["Architecture"],
                                        license: nil, source: source, location: file))
            }
        }
        return out
    }

    // MARK: apk

    /// /lib/apk/db/installed: `P:` name, `V:` version, `A:` arch, `L:` license, `o:` origin.
    static func apk(_ view: SnapshotView) -> [FoundPackage] {
        let file = "/lib/apk/db/installed"
        guard let t = text(view, file) else { return [] }
        var out: [FoundPackage] = []
        for block in t.components(separatedBy: "\n\n") {
            var f: [Character: String] = [:]
            for line in block.split(separator: "\n") where line.count >= 2 && line.dropFirst().first == ":" {
                f[line.first!] = f[line.first!] ?? String(line.dropFirst(2))
            }
            guard let name = f["P"], let version = f["V"] else { continue }
            out.append(FoundPackage(kind: .apk, name: name, version: version, architecture: f["A"], license: f["L"],
                                    source: f["o"], location: file))
        }
        return out
    }

    // MARK: rpm

    /// rpm's SQLite database (/var/lib/rpm/rpmdb.sqlite, or /usr/lib/sysimage/rpm/): each row of
    /// `Packages` is a header blob. The Berkeley DB and NDB formats of older and SUSE systems are
    /// not read.
    static func rpm(_ view: SnapshotView) -> [FoundPackage] {
        for file in ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"] {
            guard let (_, e) = try? view.lookup(try view.resolve(file, followLast: true)), e.type == S_IFREG else { continue }
            // Opened read-only and immutable (no journal, no lock file) through the entry's layer directory.
            let uri = "file:/proc/self/fd/\(e.dirfd)/\(e.name)?immutable=1"
            return withExtendedLifetime(e) { rpmHeaders(uri: uri) }.compactMap { RPMHeader(blob: $0)?.package(location: file) }
        }
        return []
    }

    static func rpmHeaders(uri: String) -> [[UInt8]] {
        var db: OpaquePointer?
        guard sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nil) == SQLITE_OK, let db else {
            sqlite3_close(db)
            return []
        }
        defer { sqlite3_close(db) }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, "SELECT blob FROM Packages ORDER BY hnum", -1, &stmt, nil) == SQLITE_OK else { return [] }
        defer { sqlite3_finalize(stmt) }
        var out: [[UInt8]] = []
        while sqlite3_step(stmt) == SQLITE_ROW, out.count < 100_000 {
            let n = Int(sqlite3_column_bytes(stmt, 0))
            guard n > 0, let p = sqlite3_column_blob(stmt, 0) else { continue }
            out.append(Array(UnsafeRawBufferPointer(start: p, count: n)))
        }
        return out
    }

    // MARK: Python and Node

    /// Python distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`) and Node packages
    /// (`node_modules/NAME/package.json`, scoped ones too) anywhere in the root but /proc, /sys
    /// and /dev, as syft finds them. Bounded: 64 levels, 1,000,000 directories.
    static func languagePackages(_ view: SnapshotView) -> [FoundPackage] {
        var out: [FoundPackage] = []
        var visited = 0
        func walk(_ dir: SnapshotView.Directory, _ path: String, _ depth: Int) {
            guard depth < 64, visited < 1_000_000 else { return }
            visited += 1
            let parentName = path.split(separator: "/").last.map(String.init) ?? ""
            for e in (try? view.entries(dir)) ?? [] where e.type == S_IFDIR {
                let child = path + "/" + e.name
                if depth == 0 && ["proc", "sys", "dev"].contains(e.name) { continue }
                if e.name.hasSuffix(".dist-info") || e.name.hasSuffix(".egg-info") {
                    let meta = child + (e.name.hasSuffix(".dist-info") ? "/METADATA" : "/PKG-INFO")
                    if let t = text(view, meta, limit: 4 << 20), let p = paragraphs(t).first, let name = p["Name"], let version = p["Version"] {
                        out.append(FoundPackage(kind: .pypi, name: name, version: version,
                                                license: p["License-Expression"] ?? p["License"].flatMap { $0.isEmpty || $0 == "UNKNOWN" ? nil : $0 },
                                                location: meta))
                    }
                    continue
                }
                if parentName == "node_modules" || (parentName.hasPrefix("@") && path.hasSuffix("node_modules/" + parentName)) {
                    if !e.name.hasPrefix("@") && !e.name.hasPrefix("."), let t = text(view, child + "/package.json", limit: 4 << 20),
                       let json = try? JSONSerialization.jsonObject(with: Data(t.utf8)) as? [String: Any],
                       let name = json["name"] as? String, let version = json["version"] as? String {
                        out.append(FoundPackage(kind: .npm, name: name, version: version,
                                                license: json["license"] as? String, location: child + "/package.json"))
                    }
                }
                if let sub = view.child(dir, e.name) { walk(sub, child, depth + 1) }
            }
        }
        if let root = try? view.root() { walk(root, "", 0) }
        return out
    }
}

/// An rpm header blob as rpmdb.sqlite stores it: index entry count and data size (big-endian
/// 32-bit), the entries (tag, type, offset, count), then the data.
struct RPMHeader {
    var strings: [Int32: String] = [:]
    var ints: [Int32: Int32] = [:]

    static let name: Int32 = 1000, version: Int32 = 1001, release: Int32 = 1002, epoch: Int32 = 1003
    static let license: Int32 = 1014, arch: Int32 = 1022, sourceRPM: Int32 = 1044

    init?(blob: [UInt8]) {
        func be32(_ at: Int) -> Int32? {
            guard at >= 0, at + 4 <= blob.count else { return nil }
            return Int32(bitPattern: UInt32(blob[at]) << 24 | UInt32(blob[at + 1]) << 16 | UInt32(blob[at + 2]) << 8 | UInt32(blob[at + 3]))
        }
        guard let il = be32(0), let dl = be32(4), il > 0, il < 100_000, dl >= 0 else { return nil }
        let dataStart = 8 + Int(il) * 16
        guard dataStart + Int(dl) <= blob.count else { return nil }
        for i in 0..<Int(il) {
            let at = 8 + i * 16
            guard let tag = be32(at), let type = be32(at + 4), let offset = be32(at + 8), offset >= 0, offset < dl else { return nil }
            let start = dataStart + Int(offset)
            switch type {
            case 6, 8, 9:   // STRING, STRING_ARRAY, I18NSTRING: the first string
                guard let end = blob[start..<(dataStart + Int(dl))].firstIndex(of: 0) else { continue }
                strings[tag] = String(decoding: blob[start..<end], as: UTF8.self)
            case 4:         // INT32
                if let v = be32(start) { ints[tag] = v }
            default: continue
            }
        }
        guard strings[RPMHeader.name] != nil else { return nil }
    }

    func package(location: String) -> FoundPackage? {
        guard let name = strings[RPMHeader.name], let version = strings[RPMHeader.version] else { return nil }
        var full = version
        if let release = strings[RPMHeader.release] { full += "-" + release }
        if let epoch = ints[RPMHeader.epoch], epoch > 0 { full = "\(epoch):" + full }
        return FoundPackage(kind: .rpm, name: name, version: full, architecture: strings[RPMHeader.arch],
                            license: strings[RPMHeader.license], source: strings[RPMHeader.sourceRPM], location: location)
    }
}
